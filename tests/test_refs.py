"""Refs resolved by one thread while another waits on them: no result is lost.

The polling thread resolves slots while the waiting thread registers its callbacks. This
drives the real `core.refs` with a rank that only answers `wait` (no MPI: the race is
between two Python threads, not between ranks). It reproduces a hang seen with 1,000
pipelined calls: `yr.get` of the list waited to its timeout with every result in.
"""

from __future__ import annotations

import pytest

from yrmpi.core import rank as rank_mod
from yrmpi.core import refs
from yrmpi.core.refs import ObjectRef, Slot


class _Objects:
    def ensure_fetch(self, ref: ObjectRef) -> None:
        pass  # every ref here is this rank's own


class _WaitOnly:
    """A rank whose wait looks once, without polling anything: with every result in, the wait
    must already be over; if it is not, a real one would last until its deadline."""

    rank = 0
    objects = _Objects()

    def wait(self, done, arm, deadline) -> bool:
        if not done():
            raise AssertionError("every result is in, but the wait is not over: it would last to its deadline")
        return True


@pytest.fixture
def rank():
    rk = _WaitOnly()
    rank_mod.install(rk)
    yield rk
    rank_mod.install(None)


class _FinishesWhenLookedAt(Slot):
    """A slot whose result arrives just after the waiter first looked at it (the resolver
    thread ran in between): the waiter must still count it."""

    __slots__ = ("_looked",)

    def __init__(self) -> None:
        super().__init__()
        self._looked = False

    def done(self) -> bool:
        if not self._looked:
            self._looked = True
            return False
        if self.value is refs._MISSING:
            self.set_result("late")
        return True


def test_a_result_arriving_while_the_waiter_registers_is_counted(rank):
    early = Slot()
    early.set_result("early")
    items = [ObjectRef(1, 0, early), ObjectRef(2, 0, _FinishesWhenLookedAt())]
    assert refs.get(items, timeout=5) == ["early", "late"]
