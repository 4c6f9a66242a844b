"""Hung-rank detection: a host rank that stops answering is treated as dead.

MPI notices a rank that dies (ULFM), but not one that is stopped (SIGSTOP, a debugger), hung in
the kernel, or cut off by a network that drops packets: TCP then retries for minutes, and calls
to its instances wait until their timeouts. So every host rank that holds instances sends rank 0
a small `Alive` every `INTERVAL_S` (from the progress engine's timer: an idle rank wakes for
nothing more), and rank 0 declares a rank that holds instances and has sent nothing for
`YRMPI_LIVENESS_S` seconds (default 10; 0 turns detection off) failed: every rank then handles
it exactly like a rank MPI reported dead (`RanksFailed`: its instances end or are recovered
elsewhere, calls to it fail), and sends to it are dropped from then on, so no rank blocks on it.

Rank 0 watches only ranks that hold instances: an idle rank sends nothing and is never declared.
A rank whose every thread is stuck in native code that holds the GIL for longer than the limit
is declared too; raise YRMPI_LIVENESS_S for such jobs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from ..core.errors import YRRuntimeError
from ..core.log import log
from ..core.messages import Alive, RanksFailed, RanksUnresponsive
from ..core.rank import Rank

__all__ = ["DEFAULT_LIMIT_S", "INTERVAL_S", "Liveness", "limit_from_env"]

DEFAULT_LIMIT_S = 10.0
INTERVAL_S = 2.0  # how often a rank holding instances says it is alive
CHECK_S = 0.5  # how often rank 0 looks for silent ranks


def limit_from_env() -> float:
    raw = os.environ.get("YRMPI_LIVENESS_S", "")
    try:
        limit = float(raw) if raw else DEFAULT_LIMIT_S
    except ValueError:
        limit = -1
    if limit < 0:
        raise YRRuntimeError(f"YRMPI_LIVENESS_S must be a number of seconds >= 0 (0: off); got {raw!r}")
    return limit


class Liveness:
    """Both sides: a host rank's `Alive` beat, rank 0's watch over the ranks that hold instances.

    `busy()` (host ranks): this rank holds instances. `watched()` (rank 0): the ranks holding
    instances now. `mark_failed(ranks)` (wired by the runtime): the wire drops sends to them from
    now on."""

    def __init__(self, here: Rank, busy: Callable[[], bool] | None, watched: Callable[[], Iterable[int]] | None,
                 mark_failed: Callable[[Iterable[int]], None] | None = None, limit_s: float | None = None) -> None:
        self.here = here
        self.busy = busy
        self.watched = watched
        self.mark_failed = mark_failed
        self.limit = limit_from_env() if limit_s is None else limit_s
        self.interval = min(INTERVAL_S, self.limit / 4)
        self.next_beat = 0.0
        self.next_check = 0.0
        self.heard: dict[int, float] = {}  # rank 0: watched rank -> when it was last heard of
        self.declared: set[int] = set()

    def handlers(self) -> dict[type, Callable[..., None]]:
        return {Alive: self.on_alive, RanksUnresponsive: self.on_ranks_unresponsive}

    def tick(self, now: float) -> None:
        if not self.limit:
            return
        if self.busy is not None:
            if now >= self.next_beat and self.busy():
                self.next_beat = now + self.interval
                self.here.send(0, Alive(self.here.rank))
        elif self.watched is not None and now >= self.next_check:
            self.next_check = now + CHECK_S
            self._check(now)

    # -- rank 0 ------------------------------------------------------------------------------
    def on_alive(self, rank: int) -> None:
        if rank in self.heard:
            self.heard[rank] = self.here.clock()

    def _check(self, now: float) -> None:
        failed = self.here.failed_ranks()
        watched = {r for r in self.watched() if r != 0 and r not in failed}
        heard = self.heard
        for rank in [r for r in heard if r not in watched]:
            del heard[rank]  # holds nothing now: not expected to speak
        silent = []
        for rank in watched:
            last = heard.setdefault(rank, now)  # the clock starts when it first holds an instance
            if now - last > self.limit:
                silent.append(rank)
        if silent:
            silent.sort()
            log.error("rank(s) %s sent nothing for %g s while holding instances (stopped, hung or cut off); "
                      "treating them as dead (YRMPI_LIVENESS_S)", silent, self.limit)
            for rank in range(1, self.here.size):
                if rank not in failed and rank not in silent:
                    self.here.send(rank, RanksUnresponsive(silent))
            self.on_ranks_unresponsive(silent)

    # -- every rank ----------------------------------------------------------------------------
    def on_ranks_unresponsive(self, ranks: list[int]) -> None:
        """Rank 0 declared `ranks` failed: never send to them again, and handle them as dead."""
        new = [r for r in ranks if r not in self.declared and r != self.here.rank]
        if not new:
            return
        self.declared.update(new)
        for rank in new:
            self.heard.pop(rank, None)
        if self.mark_failed is not None:
            self.mark_failed(new)
        self.here.send(self.here.rank, RanksFailed(new))
