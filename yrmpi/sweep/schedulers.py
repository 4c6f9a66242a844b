"""Early stopping: the median stopping rule and ASHA, as pure state machines on rank 0.

A scheduler sees every ``trial.report`` in journal order (``decide(exp, step, value)``) and
answers ``("continue", "")`` or ``("stop", reason)``.  Its whole state is the values it was
shown, so a resumed sweep rebuilds it by replaying the journal's ``report`` lines through the
same calls (:func:`replay`): it reaches the same decisions, and the decisions are journaled
too, so one that was made is never made differently.

A value that is not a finite number (no such metric in the report, NaN) is never compared
and never recorded: the experiment continues.  Each experiment's first value at a step (or
rung) is the one kept: an experiment resumed from a checkpoint reports its redone steps again
with the same values, and they must not count twice.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["ASHA", "MedianStopping", "Scheduler", "make_scheduler", "replay"]

logger = logging.getLogger("yrmpi")
CONTINUE = ("continue", "")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


class Scheduler:
    """The interface: ``decide`` records a report and returns the decision."""

    def __init__(self, mode: str) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be min or max, got {mode!r}")
        self.mode = mode

    def better(self, a: float, b: float) -> bool:
        return a < b if self.mode == "min" else a > b

    def decide(self, exp: str, step: float | None, value: Any) -> tuple[str, str]:  # pragma: no cover
        raise NotImplementedError


class MedianStopping(Scheduler):
    """Stop an experiment whose value at step t is worse than the median of the values the
    other experiments had at t, once t >= ``grace_period`` and at least ``min_samples`` others
    have reached t."""

    def __init__(self, mode: str, grace_period: int = 1, min_samples: int = 3) -> None:
        super().__init__(mode)
        self.grace_period = grace_period
        self.min_samples = min_samples
        self.at: dict[float, dict[str, float]] = {}  # step -> exp -> its value there

    def decide(self, exp: str, step: float | None, value: Any) -> tuple[str, str]:
        v = _number(value)
        if v is None or step is None:
            return CONTINUE
        seen = self.at.setdefault(step, {})
        if exp in seen:  # a redone step after a resume: decided the first time
            return CONTINUE
        others = list(seen.values())
        seen[exp] = v
        if step < self.grace_period or len(others) < self.min_samples:
            return CONTINUE
        median = statistics.median(others)
        if self.better(median, v):
            return "stop", (f"median rule: {v:.6g} at step {step:g} is worse than the median {median:.6g} "
                            f"of {len(others)} others")
        return CONTINUE


class ASHA(Scheduler):
    """Asynchronous successive halving (Li et al. 2020, as Ray Tune's ``ASHAScheduler``).

    Rungs at ``grace_period * reduction_factor**k`` up to ``max_t``.  The first time an
    experiment reaches a rung (its step >= the rung, highest rung first), its value is
    compared with those already recorded there: it stops unless it is in the best
    ``1/reduction_factor`` of them (the cutoff is the ``1 - 1/rf`` quantile, linear
    interpolation, of the rewards), then its value is recorded on that rung.  The first
    experiment at a rung always continues.  Steps past ``max_t`` are the experiment's own
    business: ASHA never stops at ``max_t`` (a trainer should end its loop there).
    """

    def __init__(self, mode: str, max_t: int, grace_period: int = 1, reduction_factor: float = 3) -> None:
        super().__init__(mode)
        if reduction_factor < 2 or grace_period < 1 or max_t < grace_period:
            raise ValueError("ASHA needs reduction_factor >= 2 and 1 <= grace_period <= max_t")
        self.max_t, self.rf = max_t, reduction_factor
        self.rungs: list[tuple[float, dict[str, float]]] = []
        k = 0
        while grace_period * reduction_factor ** k <= max_t:
            self.rungs.append((grace_period * reduction_factor ** k, {}))
            k += 1
        self.rungs.reverse()  # highest first

    def cutoff(self, recorded: Mapping[str, float]) -> float | None:
        """The reward an experiment must reach at a rung (rewards: higher is better)."""
        if not recorded:
            return None
        values = sorted(recorded.values())
        q = (1 - 1 / self.rf) * (len(values) - 1)
        lo = math.floor(q)
        hi = min(lo + 1, len(values) - 1)
        return values[lo] + (values[hi] - values[lo]) * (q - lo)

    def decide(self, exp: str, step: float | None, value: Any) -> tuple[str, str]:
        v = _number(value)
        if v is None or step is None:
            return CONTINUE
        reward = -v if self.mode == "min" else v
        for milestone, recorded in self.rungs:
            if step < milestone or exp in recorded:
                continue
            cutoff = self.cutoff(recorded)
            recorded[exp] = reward
            if cutoff is not None and reward < cutoff:
                shown = -cutoff if self.mode == "min" else cutoff
                return "stop", (f"asha: {v:.6g} at rung {milestone:g} is not in the best 1/{self.rf:g} "
                                f"(cutoff {shown:.6g}, {len(recorded) - 1} others)")
            return CONTINUE
        return CONTINUE


def make_scheduler(spec: Mapping[str, Any] | None, mode: str) -> Scheduler | None:
    """The scheduler a validated ``scheduler:`` section describes (None: no early stopping)."""
    if not spec:
        return None
    if spec["type"] == "median":
        return MedianStopping(mode, spec.get("grace_period", 1), spec.get("min_samples", 3))
    if spec["type"] == "asha":
        return ASHA(mode, spec["max_t"], spec.get("grace_period", 1), spec.get("reduction_factor", 3))
    raise ValueError(f"unknown scheduler {spec['type']!r}")


def replay(scheduler: Scheduler, records: Iterable[Mapping[str, Any]], metric: str) -> int:
    """Feed a journal's ``report`` lines to a fresh scheduler, in order; the number of decisions
    that came out differently from the journaled ones (0 unless the config changed), each
    logged.  The journaled decision stands either way."""
    differ = 0
    for r in records:
        if r.get("event") != "report" or not isinstance(r.get("metrics"), dict):
            continue
        step = r.get("step")
        decision, _ = scheduler.decide(r.get("exp", ""), step if _number(step) is not None else None,
                                       r["metrics"].get(metric))
        if decision != r.get("decision", "continue"):
            differ += 1
            logger.warning("warning: replaying the journal: %s at step %s gave %s, the journal says %s",
                           r.get("exp"), step, decision, r.get("decision"))
    return differ
