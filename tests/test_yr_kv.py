"""The job's KV store (kv_write/kv_read/kv_del, kv_set/kv_get, the *_with_param forms) and
save_state/load_state, on the loopback world: the public yr API only."""
# ruff: noqa: F811  (`world` is a fixture imported from yr_world)


from __future__ import annotations

import pytest
from yr_world import Box, world  # noqa: F401

import yrmpi as yr


def test_kv_write_read_delete_across_ranks(world):
    world.pass_time_when_idle(0.25, 1000)  # (a read of a missing key then times out)
    yr.kv_write("k1", b"v1")
    assert yr.kv_read("k1") == b"v1"
    box = Box.invoke()
    assert yr.get(box.kv_get.invoke("k1"), timeout=5) == b"v1"
    yr.get(box.kv_put.invoke("k2", b"from-instance"), timeout=5)
    assert yr.kv_get(["k1", "k2"]) == [b"v1", b"from-instance"]
    yr.kv_del(["k1", "k2"])
    with pytest.raises(RuntimeError):
        yr.kv_read("k1", timeout=0.5)


def test_kv_existence_ttl_params_and_transactions(world):
    world.pass_time_when_idle(0.25, 1000)
    yr.kv_write("nx", b"1", yr.ExistenceOpt.NX)
    with pytest.raises(RuntimeError, match="already exists"):
        yr.kv_write("nx", b"2", yr.ExistenceOpt.NX)
    param = yr.SetParam()
    param.ttl_second = 10
    yr.kv_write_with_param("short", b"x", param)
    assert yr.kv_read("short") == b"x"
    world.advance(11)
    with pytest.raises(RuntimeError):
        yr.kv_read("short", timeout=0.5)
    yr.kv_m_write_tx(["a", "b"], [b"A", b"B"], yr.MSetParam())
    with pytest.raises(RuntimeError):
        yr.kv_m_write_tx(["b", "c"], [b"x", b"y"])
    with pytest.raises(RuntimeError):
        yr.kv_read("c", timeout=0.5)  # all or nothing
    yr.kv_write("long", b"0123456789")
    params = yr.GetParams(get_params=[yr.GetParam(offset=2, size=3)])
    assert yr.kv_get_with_param(["long"], params) == [b"234"]
    big = bytes(range(256)) * 1024  # 256 KB: out of band
    yr.kv_write("big", big)
    assert yr.kv_read("big") == big


def test_save_state_and_load_state_inside_a_method(world):
    box = Box.invoke()
    yr.get(box.add.invoke(1), timeout=5)
    yr.get(box.save.invoke(), timeout=5)
    yr.get(box.add.invoke(2), timeout=5)
    assert yr.get(box.items_.invoke(), timeout=5) == [1, 2]
    yr.get(box.load.invoke(), timeout=5)
    assert yr.get(box.items_.invoke(), timeout=5) == [1]
    with pytest.raises(RuntimeError, match="inside an instance"):
        yr.save_state()
