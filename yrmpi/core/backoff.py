"""The back-off of every wait loop in yrmpi: an idle rank must not hold a core.

Measured on oversubscribed nodes (docs/architecture.md, "Progress engine"): a loop that spins
or sleeps a fixed short time costs the busy ranks most of a core, and one that sleeps long
adds that sleep to every answer. So a loop that found nothing sleeps a little, then twice as
long each round up to a cap, and starts again from the shortest sleep when work arrives.
"""

from __future__ import annotations


class Backoff:
    __slots__ = ("first", "most", "_sleep")

    def __init__(self, first: float, most: float) -> None:
        self.first = first
        self.most = most
        self._sleep = first

    def reset(self) -> None:
        """Something arrived: the next sleep is the shortest again."""
        self._sleep = self.first

    def next(self, most: float | None = None) -> float:
        """How long to sleep now; the following sleep doubles, up to `most` (default: the cap)."""
        sleep = self._sleep
        self._sleep = min(sleep * 2, self.most if most is None else most)
        return sleep
