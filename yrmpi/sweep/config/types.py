"""The schema's key names and defaults, and the validated values a sweep is made of."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from .targets import find_entry_file, is_file_target, split_entry

#: Every top-level key the schema knows, in documentation order.
TOP_KEYS = (
    "name", "entry", "run", "init", "workers", "resources", "params", "samples", "seeds",
    "retries", "metric", "output", "max_concurrent", "grace_period", "status_interval",
    "timeout", "scheduler", "search",
)
REQUIRED_KEYS = ("name", "entry", "run", "params")
#: Distribution names accepted under a param.
DISTRIBUTIONS = ("loguniform", "uniform", "randint", "choice")
RESOURCE_ROLES = ("supervisor", "worker")
METRIC_KEYS = ("name", "mode")
METRIC_MODES = ("min", "max")
#: Default cpu (millicores) / memory (MB) of one instance: the runtime's InvokeOptions default.
DEFAULT_CPU = 500
DEFAULT_MEMORY = 500
#: Upper bound on experiments of one sweep; a typo like ``samples: 100000`` fails early.
MAX_EXPERIMENTS = 100_000
#: Upper bound on ``workers``: every worker is an instance that needs room on a rank, and a
#: sweep of experiments wider than MAX_RANKS / 10 ranks is almost certainly a typo.
MAX_WORKERS = 10_000
#: Upper bound on the ranks one sweep plans for (a local launch, or a job's world size).
MAX_RANKS = 100_000
#: Longest path / path component (bytes) an output folder may have (Linux PATH_MAX, NAME_MAX).
MAX_PATH = 4096
MAX_NAME = 255


@dataclass(frozen=True)
class Grid:
    """A list param: one grid axis."""

    values: tuple


@dataclass(frozen=True)
class Constant:
    """A scalar param, passed unchanged to every experiment."""

    value: Any


@dataclass(frozen=True)
class Distribution:
    """A sampled param: ``kind`` is one of :data:`DISTRIBUTIONS`.

    ``args`` is ``(lo, hi)`` for the ranges and the tuple of options for ``choice``.
    """

    kind: str
    args: tuple

    def sample(self, bits: int) -> Any:
        """Map 64 random bits to a draw; a pure function, so draws are reproducible."""
        if self.kind == "choice":
            return copy.deepcopy(self.args[(bits * len(self.args)) >> 64])
        lo, hi = self.args
        if self.kind == "randint":  # both ends included; exact integer arithmetic
            return lo + ((bits * (hi - lo + 1)) >> 64)
        u = (bits >> 11) / float(1 << 53)  # [0, 1) with 53 bits, like random.random()
        if self.kind == "uniform":
            return min(lo + (hi - lo) * u, hi)
        return min(max(math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * u), lo), hi)

    def to_yaml(self) -> dict:
        return {self.kind: list(self.args)}


Param = Union[Grid, Constant, Distribution]


@dataclass(frozen=True)
class Resources:
    """What one instance asks for: cpu millicores, memory MB, custom resources."""

    cpu: int = DEFAULT_CPU
    memory: int = DEFAULT_MEMORY
    custom: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"cpu": self.cpu, "memory": self.memory, **self.custom}


@dataclass(frozen=True)
class Metric:
    """The metric that decides which experiment won."""

    name: str
    mode: str  # "min" or "max"

    def to_dict(self) -> dict:
        return {"name": self.name, "mode": self.mode}


@dataclass(frozen=True)
class Experiment:
    """One run: ``run(params, trial)`` on a fresh supervisor with ``seed``; id is stable."""

    id: str
    params: dict
    seed: int
    index: int


@dataclass(frozen=True)
class SweepConfig:
    """A validated sweep; field meanings are in the schema of the package docstring."""

    name: str
    entry: str
    run: str
    params: dict  # name -> Grid | Distribution | Constant, in YAML order
    init: dict = field(default_factory=dict)
    workers: int = 0
    supervisor_resources: Resources = field(default_factory=Resources)
    worker_resources: Resources = field(default_factory=Resources)
    samples: int = 1
    seeds: tuple = (0,)
    retries: int = 0
    metric: Metric | None = None
    output: str = ""
    max_concurrent: int | None = None
    grace_period: float = 30
    status_interval: float = 10
    timeout: float | None = None
    scheduler: dict | None = None  # {type: median|asha, ...} (config/trials.py), None: no early stopping
    search: dict | None = None  # {type: optuna, ...}, None: grid and random draws (expand)
    source: str = "<dict>"  # the YAML file (for messages); not part of to_dict()
    base_dir: str = "."  # folder file entries are resolved against first

    @property
    def total(self) -> int:
        """Experiments of the sweep: the trials of a search, else grid x samples x seeds."""
        return int(self.search["trials"]) if self.search else self.size

    @property
    def grid_size(self) -> int:
        """Points of the grid (1 when there is no list param)."""
        return math.prod(len(p.values) for p in self.params.values() if isinstance(p, Grid))

    @property
    def size(self) -> int:
        """Experiments before identical draws are merged: grid x samples x seeds."""
        return self.grid_size * self.samples * len(self.seeds)

    def entry_file(self) -> Path | None:
        """Absolute path of a file entry if it exists, else None (module entries too)."""
        target, _, _ = split_entry(self.entry)
        if not is_file_target(target):
            return None
        return find_entry_file(target, self.base_dir)

    def to_dict(self) -> dict:
        """The resolved document (defaults filled, env expanded) for ``config.yaml``.

        File entries are written as absolute paths so the file can be re-read from anywhere.
        """
        entry = self.entry
        path = self.entry_file()
        if path is not None:
            entry = f"{path}:{split_entry(self.entry)[1]}"
        params: dict[str, Any] = {}
        for k, p in self.params.items():
            if isinstance(p, Grid):
                params[k] = copy.deepcopy(list(p.values))
            elif isinstance(p, Distribution):
                params[k] = copy.deepcopy(p.to_yaml())
            else:
                params[k] = p.value
        return {
            "name": self.name,
            "entry": entry,
            "run": self.run,
            "init": copy.deepcopy(self.init),
            "workers": self.workers,
            "resources": {"supervisor": self.supervisor_resources.to_dict(),
                          "worker": self.worker_resources.to_dict()},
            "params": params,
            "samples": self.samples,
            "seeds": list(self.seeds),
            "retries": self.retries,
            "metric": self.metric.to_dict() if self.metric else None,
            "output": self.output,
            "max_concurrent": self.max_concurrent,
            "grace_period": self.grace_period,
            "status_interval": self.status_interval,
            "timeout": self.timeout,
            "scheduler": copy.deepcopy(self.scheduler),
            "search": copy.deepcopy(self.search),
        }
