"""The ``scheduler`` and ``search`` sections: early stopping (median, ASHA) and Optuna search.

Both are plain mappings after validation (``SweepConfig.scheduler`` / ``.search``), defaults
filled, so ``config.yaml`` shows every value a run used and a resume compares them.
"""

from __future__ import annotations

from typing import Any

from .errors import MISSING, Problems, describe, did_you_mean
from .values import is_int, is_number

SCHEDULERS = ("median", "asha")
SCHEDULER_KEYS = {
    "median": ("type", "grace_period", "min_samples"),
    "asha": ("type", "max_t", "grace_period", "reduction_factor"),
}
SEARCHES = ("grid", "optuna")
SAMPLERS = ("tpe", "random")
SEARCH_KEYS = ("type", "sampler", "trials", "seed")


def _keys(raw: dict, allowed: tuple, where: str, p: Problems) -> None:
    for k in raw:
        if k not in allowed:
            p.add((where, k), f"unknown key {k!r}" if isinstance(k, str) else f"unknown key {describe(k)}",
                  "one of " + ", ".join(allowed), did_you_mean(k, allowed))


def _int(raw: dict, key: str, default: int, minimum: int, where: str, p: Problems) -> int:
    v = raw.get(key, default)
    if not is_int(v) or v < minimum:
        p.add((where, key), describe(raw.get(key, MISSING)), f"an integer >= {minimum}")
        return default
    return v


def validate_scheduler(raw: Any, metric: Any, p: Problems) -> dict | None:
    """``scheduler: median`` or ``{type: asha, max_t: 20, grace_period: 1, reduction_factor: 3}``."""
    if raw is None or raw is MISSING:
        return None
    if isinstance(raw, str):
        raw = {"type": raw}
    if not isinstance(raw, dict):
        p.add(("scheduler",), describe(raw), "median, asha or a mapping like {type: asha, max_t: 20}")
        return None
    kind = raw.get("type", MISSING)
    if kind not in SCHEDULERS:
        p.add(("scheduler", "type"), describe(kind), "median or asha",
              did_you_mean(kind, SCHEDULERS) if isinstance(kind, str) else None)
        return None
    _keys(raw, SCHEDULER_KEYS[kind], "scheduler", p)
    if metric is None:
        p.add(("scheduler",), f"a {kind} scheduler without a metric",
              "metric: {name: ..., mode: min|max} (what the scheduler compares)")
    grace = _int(raw, "grace_period", 1, 1, "scheduler", p)
    if kind == "median":
        return {"type": kind, "grace_period": grace, "min_samples": _int(raw, "min_samples", 3, 1, "scheduler", p)}
    if "max_t" not in raw:
        p.add(("scheduler", "max_t"), describe(MISSING), "the largest step an experiment reports (int >= 1)")
    max_t = _int(raw, "max_t", 1, 1, "scheduler", p)
    rf = raw.get("reduction_factor", 3)
    if not is_number(rf) or rf < 2:
        p.add(("scheduler", "reduction_factor"), describe(rf), "a number >= 2")
        rf = 3
    if grace > max_t:
        p.add(("scheduler", "grace_period"), describe(grace), f"at most max_t ({max_t})")
    return {"type": kind, "max_t": max_t, "grace_period": grace, "reduction_factor": rf}


def validate_search(raw: Any, metric: Any, p: Problems) -> dict | None:
    """``search: {type: optuna, sampler: tpe, trials: N, seed: S}``; ``grid`` (the default) is None."""
    if raw is None or raw is MISSING:
        return None
    if isinstance(raw, str):
        raw = {"type": raw}
    if not isinstance(raw, dict):
        p.add(("search",), describe(raw), "a mapping like {type: optuna, sampler: tpe, trials: 50, seed: 0}")
        return None
    kind = raw.get("type", MISSING)
    if kind not in SEARCHES:
        p.add(("search", "type"), describe(kind), "optuna (grid and random draws need no search key)",
              did_you_mean(kind, SEARCHES) if isinstance(kind, str) else None)
        return None
    if kind == "grid":
        _keys(raw, ("type",), "search", p)
        return None
    _keys(raw, SEARCH_KEYS, "search", p)
    sampler = raw.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        p.add(("search", "sampler"), describe(sampler), "tpe or random",
              did_you_mean(sampler, SAMPLERS) if isinstance(sampler, str) else None)
        sampler = "tpe"
    if "trials" not in raw:
        p.add(("search", "trials"), describe(MISSING), "how many trials to ask (int >= 1)")
    trials = _int(raw, "trials", 1, 1, "search", p)
    if trials > 100_000:
        p.add(("search", "trials"), describe(trials), "at most 100000")
    seed = raw.get("seed", 0)
    if not is_int(seed):
        p.add(("search", "seed"), describe(seed), "an integer")
        seed = 0
    if metric is None:
        p.add(("search",), "an optuna search without a metric", "metric: {name: ..., mode: min|max}")
    return {"type": kind, "sampler": sampler, "trials": trials, "seed": seed}
