"""yr.Group, resource groups and yr.fcc function groups, on the loopback world: the public
yr API only."""
# ruff: noqa: F811  (`world` is a fixture imported from yr_world)


from __future__ import annotations

import pytest
from yr_world import Box, _rank_of, world  # noqa: F401

import yrmpi as yr
from yrmpi.core import rank as rank_mod


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


def _two_node_world(nodes):
    from loopback import LoopWorld

    w = LoopWorld(len(nodes) + 1, nodes=nodes)
    w.driver()
    return w


def _node_of(w, handle):
    return w.scheduler.placement.node_of(_rank_of(w, handle))


def test_a_resource_group_waits_for_room_and_fails_at_once_only_when_it_can_never_fit(world):
    hog = Box.options(yr.InvokeOptions(cpu=1000, memory=100)).invoke("hog")  # 3 host ranks of 1000 millicores
    yr.get(hog.tag_of.invoke(), timeout=5)
    later = yr.create_resource_group([{"CPU": 1000}] * 3, "later")
    with pytest.raises(yr.YRTimeoutError, match="the request stands"):
        later.wait(1)
    hog.terminate(is_sync=True)
    world.run()
    later.wait(5)  # the hog's capacity came back: reserved now
    assert yr.resources()["total"]["cpu_used"] == 3000
    yr.remove_resource_group(later)
    world.run()
    blocked = yr.create_resource_group([{"CPU": 1000}] * 3, "blocked")
    blocked.wait(5)
    waiting = yr.create_resource_group([{"CPU": 1000}], "waiting")
    yr.remove_resource_group(waiting)  # withdrawn before it got room: its wait says so
    with pytest.raises(RuntimeError, match="removed before"):
        waiting.wait(5)
    with pytest.raises(RuntimeError, match="even with every rank of the job free"):
        yr.create_resource_group([{"CPU": 1000}] * 2, "one-node", strategy="STRICT_SPREAD").wait(5)


def test_strict_pack_waits_for_one_node_with_room_for_every_bundle():
    w = _two_node_world(["a", "b", "b"])
    try:
        hog = Box.options(yr.InvokeOptions(cpu=1000, memory=100)).invoke("hog")
        yr.get(hog.tag_of.invoke(), timeout=5)
        assert _node_of(w, hog) == "b", "the roomiest node"
        rg = yr.create_resource_group([{"CPU": 500}] * 3, "trio", strategy="STRICT_PACK")
        with pytest.raises(yr.YRTimeoutError):  # 1,000 millicores free on each node: neither holds 1,500
            rg.wait(1)
        hog.terminate(is_sync=True)
        w.run()
        rg.wait(5)
        assert {w.scheduler.placement.node_of(b.rank) for b in w.scheduler.rgroups["trio"]} == {"b"}
    finally:
        rank_mod.install(None)


def test_function_group_bundles_share_a_node_and_free_it_when_they_end():
    w = _two_node_world(["a", "b", "b", "a"])  # two nodes of two ranks, not in node order
    try:
        hog = Box.options(yr.InvokeOptions(cpu=1000, memory=100)).invoke("hog")  # one rank of one node busy
        yr.get(hog.tag_of.invoke(), timeout=5)
        opts = yr.FunctionGroupOptions(cpu=500, memory=100, scheduling_affinity_each_bundle_size=2)
        handler = yr.fcc.create_function_group(Box, args=("m",), group_size=4, options=opts)
        assert yr.get(handler.tag_of.invoke(), timeout=5) == ["m"] * 4
        nodes = [_node_of(w, handler[i]) for i in range(4)]
        assert nodes[0] == nodes[1] and nodes[2] == nodes[3], nodes
        handler.terminate()
        w.run()
        assert not [name for name in w.scheduler.rgroups if name.startswith("fcc-")], "bundles freed with their members"
        too_big = yr.FunctionGroupOptions(cpu=1000, memory=100, scheduling_affinity_each_bundle_size=3)
        with pytest.raises(RuntimeError, match="STRICT_PACK"):
            yr.fcc.create_function_group(Box, args=(), group_size=3, options=too_big)
    finally:
        rank_mod.install(None)


def test_group_strategy_spreads_or_packs_its_members():
    w = _two_node_world(["a", "a", "b", "b"])
    try:
        members = [Box.options(yr.InvokeOptions(cpu=200, memory=50, group_name="s")).invoke(i) for i in range(2)]
        g = yr.Group("s", yr.GroupOptions(strategy="SPREAD"))
        g.invoke()
        g.wait()
        assert len({_node_of(w, m) for m in members}) == 2
        with pytest.raises(ValueError, match="create_resource_group"):
            yr.Group("x", yr.GroupOptions(strategy="STRICT_SPREAD"))
        with pytest.raises(ValueError, match="unknown"):
            yr.Group("x", yr.GroupOptions(strategy="SIDEWAYS"))
    finally:
        rank_mod.install(None)
