"""Load, validate and expand a sweep YAML for ``yrmpi sweep file.yaml``.

Everything the user can get wrong is checked here, before a single rank is used, and each
mistake is reported as one line ``FILE: KEY.PATH: found X, expected Y[; hint]``.  All
problems of a file are collected (not just the first): the raised :class:`SweepConfigError`
carries them in ``.problems`` and its message is the first one plus "(+N more problems)".

Schema (every key; see also docs/sweeps.md)::

    name: lr-sweep            # required. Letters, digits, '.', '_', '-'; names the output folder
    entry: jobs/dp.py:Trainer # required. "path/to/file.py:Name" (relative to the YAML file's
                              #   folder first, then the current directory) or
                              #   "package.module:Name". Name may be a yr-decorated class.
    run: train                # required. Method of the entry class that runs one experiment
    init: {}                  # kwargs for the supervisor constructor (default {})
    workers: 3                # workers per experiment, int >= 0 (default 0)
    resources:                # per instance; cpu in millicores, memory in MB, any other key
      supervisor: {cpu: 100, memory: 500}   # is a custom resource (number >= 0).
      worker: {cpu: 1000}     #   Missing cpu/memory default to 500/500 (the runtime default)
    params:                   # required, at least one key; each value is one of:
      lr: [0.1, 0.01]         #   list    -> a grid axis (non-empty, no duplicates)
      wd: {loguniform: [1.0e-5, 1.0e-2]}  # mapping -> a sampled distribution:
                              #   loguniform [lo, hi] (0 < lo < hi), uniform [lo, hi] (lo < hi),
                              #   randint [lo, hi] (ints, lo < hi, both ends included),
                              #   choice [v1, v2, ...] (non-empty)
      epochs: 5               #   scalar  -> a constant. Wrap a constant list or mapping in a
                              #   one-element list: arch: [[64, 64]]
    samples: 1                # draws of the distributions per grid point, int >= 1 (default 1;
                              #   must be 1 when there is no distribution)
    seeds: [0]                # repeats of every configuration, non-empty unique ints ([0])
    retries: 0                # re-runs of an experiment whose supervisor failed, int >= 0 (0)
    metric: {name: loss, mode: min}   # what "best" means; mode min|max. Optional (no ranking)
    output: results/lr-sweep  # results folder, relative to the current directory
                              #   (default results/<name>)
    max_concurrent: null      # cap on experiments running at once, int >= 1 or null
    grace_period: 30          # seconds running experiments get after SIGTERM/SIGUSR1 (>= 0)
    status_interval: 10       # seconds between status lines (> 0)
    timeout: null             # per-experiment limit in seconds (> 0) or null

Order of processing: YAML is parsed with ``yaml.safe_load`` only; ``--set key.path=value``
overrides are applied; ``${VAR}`` / ``${VAR:-default}`` are expanded in string values
(``$$`` is a literal ``$``; a value that is exactly one reference and expands to a number
becomes that number); then the document is validated and the entry is imported.

Expansion (:func:`expand`): grid = cartesian product of the list axes in key order; each
grid point gets ``samples`` draws of the distributions; each draw runs once per seed.
Draws are a pure function of (sweep name, grid point, sample index, param name), so a
resumed sweep rebuilds exactly the same experiments.  An experiment id is the first 12 hex
digits of sha256 over the canonical JSON of (params, seed): it does not depend on key order
or position, and identical draws collapse into one experiment.

Modules, lowest first (each imports only from those above it): ``errors`` (the problem
format), ``targets`` (what an entry string points at), ``types`` (schema constants and the
dataclasses), ``values``, ``yaml12`` (the YAML 1.2 loader), ``env``, ``overrides``, ``validate_params``, ``validation``,
``trials`` (scheduler and search), ``entry``, ``expansion``, and ``loading`` on top.
"""

from .entry import import_entry
from .env import expand_env
from .errors import SweepConfigError
from .expansion import expand, experiment_id
from .loading import load, load_dict, parse_yaml
from .overrides import apply_overrides
from .types import (
    DISTRIBUTIONS,
    MAX_EXPERIMENTS,
    TOP_KEYS,
    Constant,
    Distribution,
    Experiment,
    Grid,
    Metric,
    Resources,
    SweepConfig,
)

__all__ = [
    "DISTRIBUTIONS",
    "MAX_EXPERIMENTS",
    "TOP_KEYS",
    "Constant",
    "Distribution",
    "Experiment",
    "Grid",
    "Metric",
    "Resources",
    "SweepConfig",
    "SweepConfigError",
    "apply_overrides",
    "expand",
    "expand_env",
    "experiment_id",
    "import_entry",
    "load",
    "load_dict",
    "parse_yaml",
]
