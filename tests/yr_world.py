"""What the yr conformance unit tests share: the loopback world (tests/loopback.py: the real
roles of N ranks in one process, fake time) as a fixture, and the functions and classes they
call, written against the public yr API only."""

from __future__ import annotations

import gc

import pytest
from loopback import LoopWorld

import yrmpi as yr
from yrmpi.core import rank as rank_mod


@pytest.fixture
def world():
    w = LoopWorld(4)
    w.driver()
    yield w
    rank_mod.install(None)
    gc.collect()
    assert not w.errors, w.errors


@yr.invoke
def leaf(i):
    return i * 10


@yr.invoke
def fan_out(n):
    return [leaf.invoke(i) for i in range(n)]


@yr.invoke
def boom():
    raise ValueError("no")


@yr.invoke(return_nums=2)
def three_values():
    return 1, 2, 3


@yr.invoke(return_nums=2)
def not_a_sequence():
    return 7


@yr.instance
class Box:
    def __init__(self, tag="box"):
        self.tag = tag
        self.items = []

    def add(self, x):
        self.items.append(x)
        return len(self.items)

    def tag_of(self):
        return self.tag

    def save(self):
        yr.save_state()

    def load(self):
        yr.load_state()

    def items_(self):
        return list(self.items)

    def first_of(self, refs):
        return yr.get(refs[0])

    def kv_put(self, key, value):
        yr.kv_write(key, value)

    def kv_get(self, key):
        return yr.kv_read(key, timeout=5)


def _rank_of(world, handle):
    return world.scheduler.records[int(handle.instance_id, 16)].rank
