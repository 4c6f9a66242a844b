"""From a validated sweep to its experiments: grid, samples, seeds and stable ids."""

from __future__ import annotations

import copy
import hashlib
import itertools
from collections.abc import Iterator, Mapping
from typing import Any

from .types import Distribution, Experiment, Grid, SweepConfig
from .values import canonical_json


def experiment_id(params: Mapping[str, Any], seed: int) -> str:
    """First 12 hex digits of sha256(canonical JSON of params + seed): stable across runs."""
    blob = canonical_json({"params": dict(params), "seed": seed})
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:12]


def _bits(name: str, point: Mapping[str, Any], sample: int, param: str) -> int:
    """64 random bits that depend only on the arguments (no RNG state, no Python version)."""
    blob = canonical_json([name, dict(point), sample, param])
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
