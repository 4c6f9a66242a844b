"""A round of asking several ranks one question and collecting their answers.

Rank 0 asks in two places: the deadlock probe (does anything still run on your rank?) and the
group registry's mismatch probe (which collectives did your members call?). Both send one
message per rank, take each rank's answer once, and act when every rank has answered.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .rank import Rank


class Round:
    __slots__ = ("round_id", "sent", "expecting", "answers")

    def __init__(self, here: Rank, ranks: Iterable[int], question: Callable[[int], tuple]) -> None:
        """Send `question(round_id)` to every rank in `ranks`."""
        self.round_id = here.new_id()
        self.sent = here.clock()
        self.expecting = set(ranks)
        self.answers: dict[int, Any] = {}
        for rank in self.expecting:
            here.send(rank, question(self.round_id))

    def answer(self, rank: int, value: Any) -> bool:
        """Record one rank's answer (once); True when every rank has answered."""
        if rank in self.expecting:
            self.expecting.discard(rank)
            self.answers[rank] = value
        return not self.expecting
