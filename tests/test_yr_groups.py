"""yr.Group, resource groups and yr.fcc function groups, on the loopback world: the public
yr API only."""
# ruff: noqa: F811  (`world` is a fixture imported from yr_world)


from __future__ import annotations

import pytest
from yr_world import Box, _rank_of, world  # noqa: F401

import yrmpi as yr


@yr.invoke
def whoami(tag):
    ctx = yr.fcc.get_function_group_context()
    return tag, ctx.rank_id, ctx.world_size


def test_resource_groups_reserve_capacity_and_hold_their_instances(world):
    rg = yr.create_resource_group([{"CPU": 1000, "Memory": 500}, {"CPU": 1000, "Memory": 500}], "exp",
                                  strategy="SPREAD")
    rg.wait(10)
    assert rg.bundle_count == 2 and yr.resources()["total"]["cpu_used"] == 2000
    opt = yr.InvokeOptions(cpu=500, memory=100)
    opt.resource_group_options = yr.ResourceGroupOptions("exp", 1)
    members = [Box.options(opt).invoke() for _ in range(2)]
    yr.get([m.tag_of.invoke() for m in members], timeout=5)
    assert yr.resources()["total"]["cpu_used"] == 2000, "members use the group's reservation"
    bundle_rank = world.scheduler.rgroups["exp"][1].rank
    assert {_rank_of(world, m) for m in members} == {bundle_rank}
    too_big = Box.options(yr.InvokeOptions(memory=600, resource_group_options=yr.ResourceGroupOptions("exp"))).invoke()
    with pytest.raises(yr.YRError, match="more than any bundle"):
        yr.get(too_big.tag_of.invoke(), timeout=5)
    with pytest.raises(RuntimeError, match="does not fit"):
        yr.create_resource_group([{"CPU": 1000}] * 5, "too-big").wait()
    yr.remove_resource_group(rg)
    world.run()
    assert yr.resources()["total"]["cpu_used"] == 0
    assert not members[0].is_activate()


def test_a_group_creates_its_members_together_and_shares_their_fate(world):
    opts = yr.InvokeOptions(group_name="g1")
    a, b = Box.options(opts).invoke("a"), Box.options(opts).invoke("b")
    world.run()
    assert not world.scheduler.records, "members wait for the group's invoke"
    g = yr.Group("g1", yr.GroupOptions())
    g.invoke()
    g.wait()
    assert yr.get([a.tag_of.invoke(), b.tag_of.invoke()], timeout=5) == ["a", "b"]
    yr.get(a.add.invoke(7), timeout=5)
    g.suspend()
    assert not a.is_activate()
    g.resume()
    assert yr.get(a.items_.invoke(), timeout=5) == [7], "resumed with its attributes"
    a.terminate(is_sync=True)
    world.run()
    assert not b.is_activate(), "same_lifecycle: one member's end ends the others"


def test_function_groups_of_a_class_and_of_a_function(world):
    opts = yr.FunctionGroupOptions(cpu=200, memory=100, scheduling_affinity_each_bundle_size=2)
    handler = yr.fcc.create_function_group(Box, args=("m",), group_size=4, options=opts)
    assert yr.get(handler.tag_of.invoke(), timeout=5) == ["m"] * 4
    assert len(handler) == 4 and yr.get(handler[2].add.invoke(1), timeout=5) == 1
    handler.terminate()
    refs = yr.fcc.create_function_group(whoami, args=("f",), group_size=3, options=yr.FunctionGroupOptions(cpu=200))
    assert yr.get(refs, timeout=5) == [("f", 0, 3), ("f", 1, 3), ("f", 2, 3)]
    world.run()
    assert not world.scheduler.records, "a function's members end once they have run"
    with pytest.raises(ValueError, match="divisible"):
        yr.fcc.create_function_group(Box, args=(), group_size=3, options=opts)
    assert yr.fcc.get_function_group_context().world_size == 0
