"""Deadlock detection: creations wait for room that nothing running can ever free.

When creations have waited `DEADLOCK_AFTER_S` and no capacity changed meanwhile, the
scheduler asks every host rank with instances whether anything runs outside a yrmpi wait
(Probe / ProbeResult). If nothing runs, the driver waits too, and the same holds on the next
round, the waiting creations can never be placed: `on_deadlock()` fails them with the
arithmetic. A rank that does not answer within `ANSWER_S` is busy in native code: that round
counts as "something runs".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..core.messages import Probe
from ..core.rank import Rank
from ..core.rounds import Round

DEADLOCK_AFTER_S = 1.5  # creations waiting this long, with no capacity change, get a probe
ANSWER_S = 2.0  # a probe round unanswered this long is abandoned
ROUNDS = 2  # consecutive idle rounds that make a deadlock


class DeadlockProbe:
    def __init__(self, here: Rank, last_change: Callable[[], float], on_deadlock: Callable[[], None]) -> None:
        self.here = here
        self._last_change = last_change  # when capacity last changed (the scheduler's clock)
        self._on_deadlock = on_deadlock
        self.round: Round | None = None
        self.idle_rounds = 0  # consecutive rounds that found nothing running

    def check(self, now: float, oldest_wait: float, ranks: Iterable[int]) -> None:
        """Creations wait (the oldest since `oldest_wait`); `ranks` hold placed instances."""
        if now - oldest_wait < DEADLOCK_AFTER_S or now - self._last_change() < DEADLOCK_AFTER_S:
            self.idle_rounds = 0
            return
        if self.round is not None:
            if now - self.round.sent > ANSWER_S:
                self.round = None
                self.idle_rounds = 0
            return
        self.round = Round(self.here, ranks, Probe)
        if not self.round.expecting:
            self._round_done()

    def on_probe_result(self, probe_id: int, rank: int, state: dict) -> None:
        rnd = self.round
        if rnd is not None and rnd.round_id == probe_id and rnd.answer(rank, state):
            self._round_done()

    def _round_done(self) -> None:
        rnd, self.round = self.round, None
        busy = any(running > 0 or queued > 0
                   for state in rnd.answers.values() for running, _waiting, queued in state.values())
        stuck = not busy and self.here.driver_is_waiting() and self._last_change() < rnd.sent
        self.idle_rounds = self.idle_rounds + 1 if stuck else 0
        if self.idle_rounds >= ROUNDS:  # nothing ran and nothing changed, every round
            self.idle_rounds = 0
            self._on_deadlock()
