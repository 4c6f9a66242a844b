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
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import importlib
import importlib.util
import inspect
import itertools
import json
import math
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

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

#: Every top-level key the schema knows, in documentation order.
TOP_KEYS = (
    "name", "entry", "run", "init", "workers", "resources", "params", "samples", "seeds",
    "retries", "metric", "output", "max_concurrent", "grace_period", "status_interval",
    "timeout",
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
_MAX_NODES = 200_000  # YAML aliases can make a small file expand into a huge tree
_MAX_DEPTH = 64

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SIMPLE_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_VAR_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{")
_WHOLE_VAR_RE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}$")
_INT_RE = re.compile(r"^[-+]?\d+$")
_FLOAT_RE = re.compile(r"^[-+]?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?$")
_MISSING = object()


# --------------------------------------------------------------------------- errors


class SweepConfigError(ValueError):
    """A mistake in a sweep config: one line naming file, key path, found and expected.

    ``problems`` holds every problem found (one line each); the message is the first of them,
    plus a count of the others, so ``str(err)`` is still a single line.
    """

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems: tuple[str, ...] = tuple(problems) or (message,)


_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _oneline(text: str) -> str:
    """Escape line breaks and control characters: a problem is always one printable line."""
    return _CONTROL_RE.sub(lambda m: _ESCAPES.get(m.group(0), f"\\u{ord(m.group(0)):04x}"),
                           text)


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


class _Index(int):
    """A list position in a key path (rendered ``[i]``, unlike an integer mapping key)."""


def _path_str(path: Sequence[Any]) -> str:
    """``params.wd.loguniform``, ``params.lr[2]``; odd keys are JSON-quoted (one line)."""
    if not path:
        return "(document)"
    out = []
    for seg in path:
        if isinstance(seg, _Index):
            out.append(f"[{int(seg)}]")
            continue
        text = seg if isinstance(seg, str) else str(seg)
        if not _SIMPLE_KEY_RE.match(text):
            text = json.dumps(text)
        out.append(("." if out else "") + text)
    return "".join(out)


_TYPE_NAMES = {bool: "boolean", int: "integer", float: "number", str: "string",
               list: "list", dict: "mapping", type(None): "null"}


def _found(value: Any) -> str:
    """``integer 3``, ``string "three"``, ``nothing (key is missing)`` for error messages."""
    if value is _MISSING:
        return "nothing (key is missing)"
    if value is None:
        return "null"
    kind = _TYPE_NAMES.get(type(value), type(value).__name__)
    try:
        text = json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return f"{kind} {_short(text)}"


def _did_you_mean(word: Any, choices: Sequence[str], cutoff: float = 0.6) -> str | None:
    if not isinstance(word, str):
        return None
    hits = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    if not hits:
        hits = [c for c in choices if c.lower() == word.lower()]
    return f"did you mean {hits[0]!r}?" if hits else None


class _Problems:
    """Collects one-line problems; a path is reported once (no cascades of the same key)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: list[str] = []
        self._paths: set[tuple] = set()

    def add(self, path: Sequence[Any], found: str, expected: str, hint: str | None = None,
            ) -> None:
        key = tuple(repr(p) for p in path)
        if key in self._paths:
            return
        self._paths.add(key)
        line = f"{self.source}: {_path_str(path)}: found {found}, expected {expected}"
        if hint:
            line += f"; {hint}"
        self.lines.append(_oneline(line))

    def has(self, path: Sequence[Any]) -> bool:
        return tuple(repr(p) for p in path) in self._paths

    def raise_if_any(self) -> None:
        if not self.lines:
            return
        message = self.lines[0]
        if len(self.lines) > 1:
            more = len(self.lines) - 1
            message += f" (+{more} more problem{'s' if more > 1 else ''})"
        raise SweepConfigError(message, self.lines)


# --------------------------------------------------------------------------- data types


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
    """A validated sweep; field meanings are in the module docstring."""

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
    source: str = "<dict>"  # the YAML file (for messages); not part of to_dict()
    base_dir: str = "."  # folder file entries are resolved against first

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
        target, _, _ = _split_entry(self.entry)
        if not _is_file_target(target):
            return None
        return _find_entry_file(target, self.base_dir)

    def to_dict(self) -> dict:
        """The resolved document (defaults filled, env expanded) for ``config.yaml``.

        File entries are written as absolute paths so the file can be re-read from anywhere.
        """
        entry = self.entry
        path = self.entry_file()
        if path is not None:
            entry = f"{path}:{_split_entry(self.entry)[1]}"
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
        }


# --------------------------------------------------------------------------- loading


def parse_yaml(text: str, source: str = "<string>") -> Any:
    """``yaml.safe_load`` with every failure turned into a one-line SweepConfigError."""
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1} column {mark.column + 1}" if mark else "(document)"
        what = " ".join(str(x) for x in (e.context, e.problem) if x) or "a syntax error"
        raise SweepConfigError(_oneline(
            f"{source}: {where}: found invalid YAML ({what}), expected valid YAML syntax"
        )) from None
    except Exception as e:  # e.g. ValueError for a date like 2024-13-45, RecursionError
        raise SweepConfigError(_oneline(
            f"{source}: (document): found YAML that cannot be read ({type(e).__name__}: {e}), "
            "expected plain YAML values (quote dates and odd strings)"
        )) from None


def load(path: str | os.PathLike, overrides: Sequence[str] = (), *,
         env: Mapping[str, str] | None = None, check_entry: bool = True) -> SweepConfig:
    """Read, override, expand, validate a sweep YAML file; raise SweepConfigError on mistakes.

    ``check_entry=False`` skips importing the entry (for reports on another machine).
    """
    source = os.fspath(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise SweepConfigError(_oneline(
            f"{source}: (file): found no readable file ({reason}), expected a sweep YAML file"
        )) from None
    raw = parse_yaml(text, source)
    return load_dict(raw, source=source, base_dir=Path(source).parent, overrides=overrides,
                     env=env, check_entry=check_entry)


def load_dict(raw: Any, *, source: str = "<dict>", base_dir: str | os.PathLike | None = None,
              overrides: Sequence[str] = (), env: Mapping[str, str] | None = None,
              check_entry: bool = True, expand_vars: bool = True) -> SweepConfig:
    """Validate an already parsed document (same rules and errors as :func:`load`).

    ``expand_vars=False`` is for re-reading a resolved ``config.yaml``, whose ``$`` are final.
    """
    base = os.fspath(base_dir) if base_dir is not None else os.getcwd()
    _check_tree(raw, source)
    if raw is None:
        raise SweepConfigError(
            f"{source}: (document): found an empty document, expected a mapping with keys "
            + ", ".join(REQUIRED_KEYS))
    if not isinstance(raw, dict):
        raise SweepConfigError(_oneline(
            f"{source}: (document): found {_found(raw)}, expected a mapping with keys "
            + ", ".join(REQUIRED_KEYS)))
    doc = apply_overrides(raw, overrides, source=source) if overrides else raw
    problems = _Problems(source)
    if expand_vars:
        doc = _expand_env(doc, os.environ if env is None else env, (), problems)
    config = _validate(doc, source, base, problems)
    entry, run = doc.get("entry"), doc.get("run")
    if (check_entry and isinstance(entry, str) and isinstance(run, str)
            and not problems.has(("entry",)) and not problems.has(("run",))):
        _check_entry(entry, run, base, problems)
    problems.raise_if_any()
    assert config is not None
    return config


def _check_tree(raw: Any, source: str) -> None:
    """Reject alias bombs and self-referencing YAML before anything walks the tree."""
    count = 0
    on_path: set[int] = set()

    def walk(node: Any, depth: int) -> None:
        nonlocal count
        count += 1
        if count > _MAX_NODES or depth > _MAX_DEPTH:
            raise SweepConfigError(
                f"{source}: (document): found a document with more than {_MAX_NODES} values "
                f"or {_MAX_DEPTH} levels of nesting, expected a small config")
        if not isinstance(node, (dict, list)):
            return
        if id(node) in on_path:
            raise SweepConfigError(
                f"{source}: (document): found a YAML alias that contains itself, "
                "expected a tree without cycles")
        on_path.add(id(node))
        for child in (node.values() if isinstance(node, dict) else node):
            walk(child, depth + 1)
        on_path.discard(id(node))

    walk(raw, 0)


# --------------------------------------------------------------------------- env vars


def expand_env(raw: Any, env: Mapping[str, str] | None = None, *,
               source: str = "<dict>") -> Any:
    """Return a copy of ``raw`` with ``${VAR}`` / ``${VAR:-default}`` expanded in strings.

    Lets one YAML serve several allocations (``output: ${SCRATCH}/sweeps``).
    """
    problems = _Problems(source)
    out = _expand_env(raw, os.environ if env is None else env, (), problems)
    problems.raise_if_any()
    return out


def _expand_env(node: Any, env: Mapping[str, str], path: tuple, problems: _Problems) -> Any:
    if isinstance(node, dict):
        return {k: _expand_env(v, env, (*path, k), problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand_env(v, env, (*path, _Index(i)), problems) for i, v in enumerate(node)]
    if not isinstance(node, str) or "$" not in node:
        return node

    def lookup(name: str, default: str | None) -> str | None:
        value = env.get(name)
        if value in (None, "") and default is not None:
            return default
        if value is None:
            problems.add(path, f"${{{name}}} but environment variable {name} is not set",
                         f"{name} set, or a default like ${{{name}:-value}}")
        return value

    whole = _WHOLE_VAR_RE.match(node)
    if whole:
        value = lookup(whole.group(1), whole.group(2))
        if value is None:
            return node
        if _INT_RE.match(value.strip()):
            return int(value)
        if _FLOAT_RE.match(value.strip()):
            return float(value)
        return value

    def sub(m: re.Match) -> str:
        text = m.group(0)
        if text == "$$":
            return "$"
        if m.group(1) is None:
            problems.add(path, f"a malformed variable reference in {json.dumps(node)}",
                         "${NAME} or ${NAME:-default} (write $$ for a literal $)")
            return text
        value = lookup(m.group(1), m.group(2))
        return text if value is None else value

    return _VAR_RE.sub(sub, node)


# --------------------------------------------------------------------------- overrides


def _allowed_keys(prefix: tuple, node: dict) -> tuple[str, Sequence[str] | None]:
    """(what a key is called, the keys allowed) at ``prefix``; None allows any key."""
    if prefix == ():
        return "key", TOP_KEYS
    if prefix == ("metric",):
        return "key", METRIC_KEYS
    if prefix == ("resources",):
        return "key", RESOURCE_ROLES
    if prefix[0] == "params":  # only existing params: a typo must not add a new one
        return ("param" if len(prefix) == 1 else "key"), [k for k in node if isinstance(k, str)]
    return "key", None  # init.*, resources.<role>.*: free-form


def _may_create(prefix: tuple, seg: str) -> bool:
    """Whether a missing mapping may be created on the way to an overridden key."""
    return ((prefix == () and seg in ("init", "resources", "metric", "params"))
            or prefix == ("resources",) or prefix[:1] == ("init",))


def apply_overrides(raw: Mapping, overrides: Sequence[str], *,
                    source: str = "<dict>") -> dict:
    """Return a copy of ``raw`` with ``key.path=value`` items applied (for ``--set``).

    Values are parsed with ``yaml.safe_load`` so ``workers=4`` is an int and
    ``params.lr=[0.1,0.2]`` a list.  Unknown keys are errors with a did-you-mean, so a typo
    in a long command line does not silently run the wrong sweep.  Top-level keys, metric
    and resources keys may be added; params must already exist in the file.
    """
    doc = copy.deepcopy(dict(raw))
    problems = _Problems(source)
    for item in overrides:
        label = f"(from --set {item})"
        key, sep, text = str(item).partition("=")
        parts = tuple(key.strip().split("."))
        if not sep or any(not part for part in parts):
            problems.add(("--set",), json.dumps(str(item)), "key.path=value")
            continue
        try:
            value = yaml.safe_load(text)
        except Exception as e:
            problems.add(parts, f"a value that is not valid YAML ({type(e).__name__}) {label}",
                         "a YAML value like 4, 0.1, [1, 2] or text")
            continue
        node: dict = doc
        for depth, seg in enumerate(parts):
            prefix = parts[:depth]
            what, allowed = _allowed_keys(prefix, node)
            if allowed is not None and seg not in allowed:
                problems.add(parts[:depth + 1], f"unknown {what} {seg!r} {label}",
                             "one of " + (", ".join(allowed) or "(none)"),
                             _did_you_mean(seg, allowed))
                break
            if depth == len(parts) - 1:
                node[seg] = value
                break
            child = node.get(seg)
            if child is None and _may_create(prefix, seg):
                child = node[seg] = {}
            if not isinstance(child, dict):
                problems.add(parts[:depth + 1], f"{_found(node.get(seg, _MISSING))} {label}",
                             f"a mapping to set {parts[depth + 1]!r} inside")
                break
            node = child
    problems.raise_if_any()
    return doc


# --------------------------------------------------------------------------- validation


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    """A finite int or float (not bool); huge ints that no float can hold are rejected."""
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return abs(v) <= sys.float_info.max
    return isinstance(v, float) and math.isfinite(v)


def _json_problem(value: Any) -> str | None:
    """Why ``value`` cannot go into an experiment id / the journal, or None if it can."""
    if value is None or isinstance(value, (str, bool, int)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value} (not a finite number)"
    if isinstance(value, list):
        for v in value:
            bad = _json_problem(v)
            if bad:
                return bad
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                return f"mapping key {_found(k)} (keys must be strings)"
            bad = _json_problem(v)
            if bad:
                return bad
        return None
    return f"{type(value).__name__} {value!s} (quote it to pass a string)"


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _split_entry(entry: str) -> tuple[str, str, bool]:
    """(target, attribute path, well formed) of ``target:Name``."""
    target, sep, attr = entry.rpartition(":")
    ok = bool(sep and target and attr and all(p.isidentifier() for p in attr.split(".")))
    if ok and not _is_file_target(target):
        ok = all(p.isidentifier() for p in target.split("."))
    return target, attr, ok


def _is_file_target(target: str) -> bool:
    return target.endswith(".py") or "/" in target or os.sep in target


def _find_entry_file(target: str, base_dir: str) -> Path | None:
    for candidate in _entry_candidates(target, base_dir):
        try:
            if candidate.is_file():
                return candidate.resolve()
        except (OSError, ValueError):  # name too long, NUL byte: simply not a file
            continue
    return None


def _entry_candidates(target: str, base_dir: str) -> list[Path]:
    p = Path(target)
    try:
        p = p.expanduser()
    except RuntimeError:  # "~user" that does not exist
        pass
    if p.is_absolute():
        return [p]
    candidates = [Path(base_dir, p)]
    try:
        cwd = Path.cwd() / p
    except OSError:  # the current directory was deleted
        return candidates
    if cwd.absolute() != candidates[0].absolute():
        candidates.append(cwd)
    return candidates


class _V:
    """Validation helpers bound to one document and its problem list."""

    def __init__(self, doc: dict, problems: _Problems) -> None:
        self.doc = doc
        self.p = problems

    def int_(self, key: str, default: Any, minimum: int, nullable: bool = False) -> Any:
        v = self.doc.get(key, default)
        if v is None and nullable:
            return None
        if not _is_int(v) or v < minimum:
            what = f"an integer >= {minimum}" + (" or null" if nullable else "")
            self.p.add((key,), _found(self.doc.get(key, _MISSING)), what)
            return default if default is not _MISSING else minimum
        return v

    def number(self, key: str, default: Any, minimum: float, strict: bool,
               nullable: bool = False) -> Any:
        v = self.doc.get(key, default)
        if v is None and nullable:
            return None
        if not _is_number(v) or (v <= minimum if strict else v < minimum):
            op = ">" if strict else ">="
            what = f"a number of seconds {op} {minimum:g}" + (" or null" if nullable else "")
            self.p.add((key,), _found(self.doc.get(key, _MISSING)), what)
            return default
        return v


def _validate(doc: dict, source: str, base_dir: str, p: _Problems) -> SweepConfig | None:
    for key in doc:
        if key not in TOP_KEYS:
            p.add((key,), f"unknown key {key!r}" if isinstance(key, str) else
                  f"unknown key {_found(key)}", "one of " + ", ".join(TOP_KEYS),
                  _did_you_mean(key, TOP_KEYS))
    for key in REQUIRED_KEYS:
        if key not in doc:
            p.add((key,), _found(_MISSING), {
                "name": "a sweep name like lr-sweep",
                "entry": "'path/to/file.py:ClassName' or 'package.module:ClassName'",
                "run": "the name of the method that runs one experiment",
                "params": "a mapping of param name -> list, distribution or constant",
            }[key])
    v = _V(doc, p)

    name = doc.get("name", _MISSING)
    if name is not _MISSING and not (isinstance(name, str) and _NAME_RE.match(name)):
        p.add(("name",), _found(name),
              "a non-empty string of letters, digits, '.', '_', '-' (it names a folder)")
    entry = doc.get("entry", _MISSING)
    if entry is not _MISSING and not (isinstance(entry, str) and _split_entry(entry)[2]):
        p.add(("entry",), _found(entry),
              "'path/to/file.py:ClassName' or 'package.module:ClassName'")
    run = doc.get("run", _MISSING)
    if run is not _MISSING and not (isinstance(run, str) and run.isidentifier()):
        p.add(("run",), _found(run), "a method name like train")

    init = doc.get("init", {})
    if init is None:
        init = {}
    if not isinstance(init, dict):
        p.add(("init",), _found(init), "a mapping of constructor keyword arguments")
        init = {}
    for k in init:
        if not (isinstance(k, str) and k.isidentifier()):
            p.add(("init", k), f"key {_found(k)}", "keyword argument names (identifiers)")

    workers = v.int_("workers", 0, 0)
    sup_res, wrk_res = _validate_resources(doc.get("resources", _MISSING), p)
    params = _validate_params(doc.get("params", _MISSING), p)
    samples = v.int_("samples", 1, 1)
    if (params is not None and samples > 1
            and not any(isinstance(x, Distribution) for x in params.values())):
        p.add(("samples",), _found(samples),
              "1 when params has no distribution to sample (loguniform, uniform, randint, choice)")
    seeds = _validate_seeds(doc.get("seeds", [0]), p)
    retries = v.int_("retries", 0, 0)
    metric = _validate_metric(doc.get("metric"), p)
    output = doc.get("output", _MISSING)
    if output is _MISSING or output is None:
        output = f"results/{name}" if isinstance(name, str) else "results"
    elif not (isinstance(output, str) and output.strip()):
        p.add(("output",), _found(output), "a folder path")
    max_concurrent = v.int_("max_concurrent", None, 1, nullable=True)
    grace_period = v.number("grace_period", 30, 0, strict=False)
    status_interval = v.number("status_interval", 10, 0, strict=True)
    timeout = v.number("timeout", None, 0, strict=True, nullable=True)

    if params is not None and seeds is not None:
        grid = math.prod(len(x.values) for x in params.values() if isinstance(x, Grid))
        total = grid * samples * len(seeds)
        if total > MAX_EXPERIMENTS:
            p.add(("params",), f"{grid} grid points x {samples} samples x {len(seeds)} seeds "
                  f"= {total} experiments", f"at most {MAX_EXPERIMENTS}")
    if p.lines:
        return None
    return SweepConfig(
        name=name, entry=entry, run=run, params=params or {}, init=copy.deepcopy(init),
        workers=workers, supervisor_resources=sup_res, worker_resources=wrk_res,
        samples=samples, seeds=tuple(seeds or (0,)), retries=retries, metric=metric,
        output=output, max_concurrent=max_concurrent, grace_period=grace_period,
        status_interval=status_interval, timeout=timeout, source=source, base_dir=base_dir,
    )


def _validate_resources(raw: Any, p: _Problems) -> tuple[Resources, Resources]:
    out = {role: Resources() for role in RESOURCE_ROLES}
    if raw is _MISSING or raw is None:
        return out["supervisor"], out["worker"]
    if not isinstance(raw, dict):
        p.add(("resources",), _found(raw), "a mapping with supervisor: and worker:")
        return out["supervisor"], out["worker"]
    for role, spec in raw.items():
        if role not in RESOURCE_ROLES:
            p.add(("resources", role), f"unknown key {role!r}" if isinstance(role, str)
                  else f"unknown key {_found(role)}", "supervisor or worker",
                  _did_you_mean(role, RESOURCE_ROLES))
            continue
        if spec is None:
            continue
        if not isinstance(spec, dict):
            p.add(("resources", role), _found(spec),
                  "a mapping like {cpu: 1000, memory: 2000, gpu: 1}")
            continue
        cpu, memory, custom = DEFAULT_CPU, DEFAULT_MEMORY, {}
        for k, amount in spec.items():
            path = ("resources", role, k)
            if not isinstance(k, str) or not k:
                p.add(path, f"key {_found(k)}", "cpu, memory or a custom resource name")
            elif k in ("cpu", "memory"):
                if not _is_int(amount) or amount < 0:
                    unit = "millicores (1000 = one core)" if k == "cpu" else "MB"
                    p.add(path, _found(amount), f"an integer >= 0 in {unit}")
                elif k == "cpu":
                    cpu = amount
                else:
                    memory = amount
            elif _did_you_mean(k, ("cpu", "memory"), cutoff=0.8):  # "cpuu", "Memory"
                p.add(path, f"unknown key {k!r}", "cpu, memory or a custom resource name",
                      _did_you_mean(k, ("cpu", "memory"), cutoff=0.8))
            elif not _is_number(amount) or amount < 0:
                p.add(path, _found(amount), "a number >= 0 (custom resource amount)")
            else:
                custom[k] = amount
        out[role] = Resources(cpu=cpu, memory=memory, custom=custom)
    return out["supervisor"], out["worker"]


def _validate_params(raw: Any, p: _Problems) -> dict | None:
    if raw is _MISSING:
        return None
    if not isinstance(raw, dict) or not raw:
        p.add(("params",), _found(raw),
              "a non-empty mapping of param name -> list, distribution or constant")
        return None
    out: dict[str, Param] = {}
    ok = True
    for name, value in raw.items():
        path = ("params", name)
        if not (isinstance(name, str) and name.isidentifier()):
            p.add(path, f"param name {_found(name)}",
                  "a keyword argument name (letters, digits, _; not starting with a digit)")
            ok = False
            continue
        param = _validate_param(value, path, p)
        if param is None:
            ok = False
        else:
            out[name] = param
    return out if ok else None


def _validate_param(value: Any, path: tuple, p: _Problems) -> Param | None:
    if isinstance(value, list):
        if not value:
            p.add(path, "an empty list", "at least one value (a list is a grid axis)")
            return None
        seen: set[str] = set()
        for i, item in enumerate(value):
            bad = _json_problem(item)
            if bad:
                p.add((*path, _Index(i)), bad, "a string, number, boolean, null, list or mapping")
                return None
            key = _canonical(item)
            if key in seen:
                p.add((*path, _Index(i)), f"duplicate value {_found(item)}",
                      "distinct values on a grid axis")
                return None
            seen.add(key)
        return Grid(tuple(copy.deepcopy(value)))
    if isinstance(value, dict):
        return _validate_distribution(value, path, p)
    bad = _json_problem(value)
    if bad:
        p.add(path, bad, "a string, number, boolean or null constant")
        return None
    return Constant(value)


def _validate_distribution(value: dict, path: tuple, p: _Problems) -> Distribution | None:
    shape = "a distribution like {loguniform: [1e-5, 1e-2]} (one of " + ", ".join(
        DISTRIBUTIONS) + "); wrap a constant mapping in a one-element list"
    if len(value) != 1:
        keys = ", ".join(str(k) for k in value) or "none"
        p.add(path, f"a mapping with keys {keys}", shape)
        return None
    ((kind, args),) = value.items()
    if kind not in DISTRIBUTIONS:
        found = f"unknown distribution {kind!r}" if isinstance(kind, str) else \
            f"unknown distribution {_found(kind)}"
        p.add(path, found, "one of " + ", ".join(DISTRIBUTIONS), _did_you_mean(kind, DISTRIBUTIONS))
        return None
    path = (*path, kind)
    if kind == "choice":
        if not isinstance(args, list) or not args:
            p.add(path, _found(args), "a non-empty list of options")
            return None
        for i, item in enumerate(args):
            bad = _json_problem(item)
            if bad:
                p.add((*path, _Index(i)), bad, "a string, number, boolean, null, list or mapping")
                return None
        return Distribution("choice", tuple(copy.deepcopy(args)))
    check = _is_int if kind == "randint" else _is_number
    kind_text = "integers" if kind == "randint" else "numbers"
    rule = "0 < lo < hi" if kind == "loguniform" else "lo < hi"
    expected = f"[lo, hi] with {kind_text} {rule}"
    if (not isinstance(args, list) or len(args) != 2 or not all(check(a) for a in args)):
        p.add(path, _found(args), expected)
        return None
    lo, hi = args
    if lo >= hi or (kind == "loguniform" and lo <= 0) or not math.isfinite(float(hi) - lo):
        p.add(path, _found(args), expected)
        return None
    return Distribution(kind, (lo, hi))


def _validate_seeds(raw: Any, p: _Problems) -> list[int] | None:
    if (not isinstance(raw, list) or not raw or not all(_is_int(s) for s in raw)
            or len(set(raw)) != len(raw)):
        p.add(("seeds",), _found(raw), "a non-empty list of distinct integers like [0, 1]")
        return None
    return raw


def _validate_metric(raw: Any, p: _Problems) -> Metric | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        p.add(("metric",), _found(raw), "a mapping like {name: loss, mode: min}")
        return None
    for k in raw:
        if k not in METRIC_KEYS:
            p.add(("metric", k), f"unknown key {k!r}" if isinstance(k, str)
                  else f"unknown key {_found(k)}", "name and mode", _did_you_mean(k, METRIC_KEYS))
    name = raw.get("name", _MISSING)
    mode = raw.get("mode", _MISSING)
    ok = True
    if not (isinstance(name, str) and name.strip()):
        p.add(("metric", "name"), _found(name), "the name of a metric the run returns, like loss")
        ok = False
    if mode not in METRIC_MODES:
        p.add(("metric", "mode"), _found(mode), "min or max",
              _did_you_mean(mode, METRIC_MODES) if isinstance(mode, str) else None)
        ok = False
    return Metric(name, mode) if ok and len(raw) == 2 else None


# --------------------------------------------------------------------------- entry


_LOADED_FILES: dict[str, tuple[int, int]] = {}  # module name -> (mtime_ns, size) when loaded


def _module_name_for(path: Path) -> str:
    stem = re.sub(r"\W", "_", path.stem) or "entry"
    digest = hashlib.sha256(str(path).encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"_yrmpi_sweep_{stem}_{digest}"


def _load_file_module(path: Path) -> Any:
    """Import a .py file under a name derived from its path, registered in sys.modules.

    Registering matters: dataclasses and cloudpickle look classes up through
    ``sys.modules``.  The module is also marked for pickling *by value* so ranks that never
    imported the file can still rebuild the class.
    """
    name = _module_name_for(path)
    stat = path.stat()
    stamp = (stat.st_mtime_ns, stat.st_size)
    loaded = sys.modules.get(name)
    if loaded is not None and _LOADED_FILES.get(name) == stamp:
        return loaded  # validated once already: do not run the user's module code twice
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    previous = sys.modules.get(name)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        if previous is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = previous
        raise
    _LOADED_FILES[name] = stamp
    try:
        import cloudpickle

        cloudpickle.register_pickle_by_value(module)
    except Exception:  # cloudpickle missing or too old: by-reference pickling still works
        pass
    return module


def import_entry(entry: str, base_dir: str | os.PathLike = ".", *, source: str = "<dict>",
                 ) -> Any:
    """Import ``file.py:Name`` / ``pkg.mod:Name`` and return the object found there.

    The object may be a yr creator proxy (decorated class); the caller gets it unchanged.
    Failures raise SweepConfigError (the user's import error is named, not re-raised).
    """
    problems = _Problems(source)
    obj = _import_entry(entry, os.fspath(base_dir), problems)
    problems.raise_if_any()
    return obj


def _import_entry(entry: str, base_dir: str, p: _Problems) -> Any:
    target, attr, ok = _split_entry(entry)
    if not ok:
        p.add(("entry",), _found(entry),
              "'path/to/file.py:ClassName' or 'package.module:ClassName'")
        return None
    where = target
    try:
        if _is_file_target(target):
            path = _find_entry_file(target, base_dir)
            if path is None:
                looked = ", ".join(str(c) for c in _entry_candidates(target, base_dir))
                p.add(("entry",), f"{_short(json.dumps(entry))} but there is no such file "
                      f"(looked at {looked})", "a path relative to the YAML file's folder "
                      "or to the current directory")
                return None
            where = str(path)
            module = _load_file_module(path)
        else:
            module = importlib.import_module(target)
    except (Exception, SystemExit) as e:
        p.add(("entry",), f"{_short(json.dumps(entry))} whose import failed with "
              f"{type(e).__name__}: {e}", "a module that imports cleanly")
        return None
    obj: Any = module
    for i, part in enumerate(attr.split(".")):
        try:
            obj = getattr(obj, part)
        except Exception:
            names = [n for n in dir(obj) if not n.startswith("_")]
            scope = where if i == 0 else ".".join(attr.split(".")[:i])
            p.add(("entry",), f"no {part!r} in {scope}", "a class defined there",
                  _did_you_mean(part, names))
            return None
    return obj


def _check_entry(entry: str, run: str, base_dir: str, p: _Problems) -> None:
    """Import the entry and check that ``run`` is a method of its class."""
    obj = _import_entry(entry, base_dir, p)
    if obj is None:
        return
    cls = getattr(obj, "__wrapped__", obj)  # a yr creator proxy wraps the user's class
    if not inspect.isclass(cls):
        p.add(("entry",), f"{type(cls).__name__} {entry!r}",
              "a class (plain or decorated with @yr.instance)")
        return
    method = getattr(cls, run, None)
    if method is None or not callable(method) or inspect.isclass(method):
        names = [n for n in dir(cls) if not n.startswith("_") and callable(getattr(cls, n, None))]
        found = f"no method {run!r} on {cls.__name__}" if method is None else \
            f"{type(method).__name__} attribute {run!r} on {cls.__name__}"
        p.add(("run",), found, "a method of the entry class", _did_you_mean(run, names))


# --------------------------------------------------------------------------- expansion


def experiment_id(params: Mapping[str, Any], seed: int) -> str:
    """First 12 hex digits of sha256(canonical JSON of params + seed): stable across runs."""
    blob = _canonical({"params": dict(params), "seed": seed})
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:12]


def _bits(name: str, point: Mapping[str, Any], sample: int, param: str) -> int:
    """64 random bits that depend only on the arguments (no RNG state, no Python version)."""
    blob = _canonical([name, dict(point), sample, param])
    return int.from_bytes(hashlib.sha256(blob.encode("utf-8")).digest()[:8], "big")


def _iter_points(config: SweepConfig) -> Iterator[dict]:
    axes = [(k, p.values) for k, p in config.params.items() if isinstance(p, Grid)]
    for combo in itertools.product(*(values for _, values in axes)):
        yield {k: v for (k, _), v in zip(axes, combo)}


def expand(config: SweepConfig) -> list[Experiment]:
    """All experiments of the sweep, in grid order (deterministic; identical ones merged)."""
    out: list[Experiment] = []
    seen: set[str] = set()
    for point in _iter_points(config):
        for sample in range(config.samples):
            params: dict[str, Any] = {}
            for name, p in config.params.items():
                if isinstance(p, Grid):
                    params[name] = copy.deepcopy(point[name])
                elif isinstance(p, Distribution):
                    params[name] = p.sample(_bits(config.name, point, sample, name))
                else:
                    params[name] = p.value
            for seed in config.seeds:
                eid = experiment_id(params, seed)
                if eid in seen:
                    continue
                seen.add(eid)
                out.append(Experiment(eid, copy.deepcopy(params), seed, len(out)))
    return out
