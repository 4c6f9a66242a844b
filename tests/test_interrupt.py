"""Interrupting an ended instance's calls: the interruption lands in the instance's code or
not at all, never in yrmpi's code around it (real threads, real asynchronous exceptions)."""

from __future__ import annotations

import random
import sys
import threading

import pytest

from yrmpi.transport.interrupt import InstanceTornDown, Shield, interrupt, run_interruptible

ROUNDS = 1500


class Inst:
    def __init__(self) -> None:
        self.threads: set[int] = set()
        self.waiting: set[int] = set()
        self.ended: object = None
        self.lock = threading.Lock()


def _end(inst: Inst) -> None:
    """What Host._end does: mark ended and interrupt, holding the lock."""
    with inst.lock:
        inst.ended = ("ended",)
        interrupt(inst, threading.get_ident())


def _spin(n: int) -> int:
    total = 0
    for i in range(n):
        total += i
    return total


@pytest.fixture(autouse=True)
def _fast_switching():
    """Switch threads every microsecond, so that the ending lands at every point of a call."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


def _race(user_code, after) -> dict[str, int]:
    """Per round: one thread runs `user_code` as an instance call, then `after` (yrmpi code
    that must never see the interruption); another thread ends the instance meanwhile."""
    counts = {"interrupted": 0, "returned": 0, "escaped": 0, "in_shield": 0}
    rng = random.Random(7)
    for _ in range(ROUNDS):
        inst = Inst()
        started = threading.Event()

        def call(inst: Inst = inst, started: threading.Event = started) -> None:
            try:
                try:
                    run_interruptible(inst, user_code, inst, started)
                    counts["returned"] += 1
                except InstanceTornDown:
                    counts["interrupted"] += 1
                after()
            except InstanceTornDown:
                counts["escaped"] += 1

        worker = threading.Thread(target=call)
        worker.start()
        started.wait()
        _spin(rng.randrange(0, 3000))
        _end(inst)
        worker.join()
        assert not inst.threads and not inst.waiting
    return counts


def test_an_interruption_never_lands_after_the_call() -> None:
    def user_code(inst: Inst, started: threading.Event) -> int:
        started.set()
        return _spin(1500)

    counts = _race(user_code, lambda: _spin(2000))
    assert counts["escaped"] == 0, counts
    assert counts["interrupted"] > 0 and counts["returned"] > 0, counts  # both sides of the race ran


def test_an_interruption_never_lands_inside_a_shield() -> None:
    """A call that waits inside yrmpi (a Shield) is not interrupted there; it notices the end
    when it leaves the shield, back in its own code."""
    inside = {"violations": 0}

    def user_code(inst: Inst, started: threading.Event) -> int:
        started.set()
        for _ in range(20):
            _spin(10)
            with Shield(inst):
                try:
                    _spin(50)  # yrmpi's code: a poll, a send
                except InstanceTornDown:
                    inside["violations"] += 1
                    raise
        return 0

    counts = _race(user_code, lambda: _spin(500))
    assert inside["violations"] == 0 and counts["escaped"] == 0, (inside, counts)
    assert counts["interrupted"] > 0, counts


def test_a_shield_outside_a_call_is_inert() -> None:
    """A serve thread sending a result is not in the instance's code: nothing to shield."""
    inst = Inst()
    with Shield(inst):
        assert not inst.waiting
    inst.ended = ("ended",)
    with Shield(inst):  # and leaving it does not raise: this thread runs no call of inst
        pass


def test_a_call_of_an_ended_instance_does_not_start() -> None:
    inst = Inst()
    inst.ended = ("ended",)
    ran = []
    with pytest.raises(InstanceTornDown):
        run_interruptible(inst, ran.append, 1)
    assert ran == [] and not inst.threads
