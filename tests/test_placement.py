"""Unit tests for yrmpi.scheduling.placement (pure logic, no MPI)."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from yrmpi.scheduling.placement import Demand, Placement, RankCapacity


def pool(nodes: int = 2, per_node: int = 4, cpu: int = 1000, memory: int = 4000,
         custom: dict[str, float] | None = None) -> Placement:
    """Ranks 1.. on nodes n0, n1, ... (rank 0 is the driver and is not a host)."""
    caps = []
    rank = 1
    for n in range(nodes):
        for _ in range(per_node):
            caps.append(RankCapacity(rank, f"n{n}", cpu, memory, dict(custom or {})))
            rank += 1
    return Placement(caps)


def used(p: Placement, rank: int) -> dict:
    return next(row for row in p.usage()["ranks"] if row["rank"] == rank)


# ----------------------------------------------------------------- Demand


def test_demand_defaults_hashable_and_picklable():
    d = Demand()
    assert (d.cpu, d.memory, dict(d.custom)) == (500, 500, {})
    a = Demand(cpu=100, custom={"gpu": 1, "fpga": 0.5})
    b = Demand(cpu=100, custom={"fpga": 0.5, "gpu": 1})
    assert a == b and hash(a) == hash(b)
    assert len({a, b, Demand(cpu=100)}) == 2
    assert a.custom["gpu"] == 1
    assert pickle.loads(pickle.dumps(a)) == a
    with pytest.raises(TypeError):
        a.custom["gpu"] = 2  # type: ignore[index]


def test_demand_rejects_negative():
    with pytest.raises(ValueError):
        Demand(cpu=-1)
    with pytest.raises(ValueError):
        Demand(memory=-1)
    with pytest.raises(ValueError):
        Demand(custom={"gpu": -1})


def test_duplicate_rank_rejected():
    with pytest.raises(ValueError, match="twice"):
        Placement([RankCapacity(1, "a", 1000, 1000, {}), RankCapacity(1, "b", 1000, 1000, {})])


# ----------------------------------------------------------------- explain_unplaceable


def test_explain_fits_returns_none():
    p = pool()
    assert p.explain_unplaceable(Demand()) is None
    assert p.explain_unplaceable(Demand(cpu=1000, memory=4000)) is None


def test_explain_cpu_arithmetic():
    p = pool(nodes=2, per_node=4)
    msg = p.explain_unplaceable(Demand(cpu=4000))
    assert msg == (
        "asks cpu=4000 millicores but the largest rank has 1000 (8 host ranks x 1000 "
        "millicores); lower cpu= or give ranks more capacity "
        "(YRMPI_CPU_PER_RANK / Config(cpu_per_rank=...))"
    )
    assert "\n" not in msg


def test_explain_heterogeneous_ranks():
    p = Placement([RankCapacity(1, "a", 1000, 1000, {}), RankCapacity(2, "a", 2000, 1000, {})])
    msg = p.explain_unplaceable(Demand(cpu=3000))
    assert "largest rank has 2000" in msg and "2 host ranks with 1000..2000 millicores" in msg


def test_explain_memory_arithmetic():
    p = pool(nodes=1, per_node=3, memory=2000)
    msg = p.explain_unplaceable(Demand(cpu=100, memory=5000))
    assert msg.startswith("asks memory=5000 MB but the largest rank has 2000 MB "
                          "(3 host ranks x 2000 MB)")
    assert "YRMPI_MEMORY_PER_RANK" in msg and "asks cpu" not in msg


def test_explain_custom_resources():
    p = Placement([RankCapacity(1, "a", 1000, 1000, {"gpu": 1}),
                   RankCapacity(2, "a", 1000, 1000, {})])
    msg = p.explain_unplaceable(Demand(custom={"tpu": 1}))
    assert msg.startswith("asks custom resource 'tpu'=1 but no rank declares it")
    msg = p.explain_unplaceable(Demand(custom={"gpu": 2}))
    assert "'gpu'=2 but the largest rank has 1 (1 of 2 host ranks declare it)" in msg
    assert p.explain_unplaceable(Demand(custom={"gpu": 1})) is None
    # Zero-valued asks ask for nothing.
    assert p.explain_unplaceable(Demand(custom={"tpu": 0})) is None


def test_explain_every_failing_dimension_named():
    p = pool()
    msg = p.explain_unplaceable(Demand(cpu=2000, memory=9000, custom={"gpu": 1}))
    assert "cpu=2000" in msg and "memory=9000" in msg and "'gpu'=1" in msg


def test_explain_no_single_rank_has_everything():
    p = Placement([RankCapacity(1, "a", 4000, 1000, {}), RankCapacity(2, "a", 1000, 4000, {})])
    msg = p.explain_unplaceable(Demand(cpu=3000, memory=3000))
    assert msg is not None and "no single host rank" in msg


def test_explain_after_all_ranks_removed_and_cache_invalidated():
    p = Placement([RankCapacity(1, "a", 4000, 1000, {}), RankCapacity(2, "a", 1000, 1000, {})])
    d = Demand(cpu=3000)
    assert p.explain_unplaceable(d) is None
    p.remove_rank(1)
    assert "largest rank has 1000" in p.explain_unplaceable(d)
    p.remove_rank(2)
    assert "no live host ranks" in p.explain_unplaceable(d)


# ----------------------------------------------------------------- place / release


def test_fits_and_does_not_fit():
    p = pool(nodes=1, per_node=2)
    assert p.place(Demand(cpu=1000)) is not None
    assert p.place(Demand(cpu=1000)) is not None
    assert p.place(Demand(cpu=1000)) is None  # full right now
    assert p.place(Demand(cpu=4000)) is None  # never fits
    assert p.place(Demand(cpu=0, memory=0)) is not None  # nothing asked, anything fits


def test_best_fit_packs_small_demands_on_one_rank():
    p = pool(nodes=1, per_node=4)
    sup = Demand(cpu=100, memory=100)
    ranks = [p.place(sup, group=g) for g in range(10)]
    assert len(set(ranks)) == 1
    # The eleventh no longer fits there and opens a second rank.
    assert p.place(sup, group=10) not in ranks


def test_best_fit_prefers_tightest_rank():
    p = pool(nodes=1, per_node=3)
    p.place(Demand(cpu=700, memory=0))  # rank 1: 300 free
    p.place(Demand(cpu=400, memory=0))  # rank 1 can't take it -> rank 2: 600 free
    assert p.place(Demand(cpu=250, memory=0)) == 1  # 300 - 250 leaves the least
    assert p.place(Demand(cpu=500, memory=0)) == 2


def test_pack_keeps_group_on_one_node_then_spills():
    p = pool(nodes=3, per_node=4)
    worker = Demand(cpu=1000, memory=100)
    ranks = [p.place(worker, group="g") for _ in range(4)]
    nodes = {p.node_of(r) for r in ranks}
    assert len(nodes) == 1 and len(set(ranks)) == 4
    fifth = p.place(worker, group="g")
    assert fifth is not None and p.node_of(fifth) not in nodes
    # Later members go to the spill node while it has room.
    sixth = p.place(worker, group="g")
    assert p.node_of(sixth) == p.node_of(fifth)


def test_pack_new_group_goes_to_node_with_most_free_cpu():
    p = pool(nodes=3, per_node=2)
    p.place(Demand(cpu=1000, memory=0), group="a")  # node n0 busier
    r = p.place(Demand(cpu=1000, memory=0), group="b")
    assert p.node_of(r) != "n0"


# ----------------------------------------------------------------- small instances (supervisors)


def driver_layout(nodes: int, per_node: int) -> Placement:
    """`mpiexec --host n0:P,n1:P,...`: rank 0 (the driver) takes a slot of n0, so n0 has one
    host rank fewer than the other nodes."""
    return Placement([RankCapacity(rank, f"n{rank // per_node}", 1000, 4000, {})
                      for rank in range(1, nodes * per_node)])


def tree(p: Placement, supervisors: int, workers: int) -> tuple[list[str], list[list[str]]]:
    """The driver creates the supervisors (cpu=100, its own group), then each creates its
    workers (cpu=1000, one group per supervisor): the nodes of each."""
    sups = [p.place(Demand(cpu=100, memory=100), group="driver") for _ in range(supervisors)]
    assert None not in sups
    groups = []
    for i in range(supervisors):
        ranks = [p.place(Demand(cpu=1000, memory=500), group=("sup", i)) for _ in range(workers)]
        assert None not in ranks
        groups.append([p.node_of(r) for r in ranks])
    return [p.node_of(r) for r in sups], groups


def test_pack_keeps_each_supervisors_workers_on_one_node_3_nodes():
    """The issue's reproduction: 3 nodes x 4 ranks, 2 supervisors x 4 workers. Supervisors on
    a node each broke a whole rank of two nodes (workers C,C,C,C and A,A,A,B); together on the
    driver's node they leave two nodes whole."""
    sups, groups = tree(driver_layout(3, 4), 2, 4)
    assert sups == ["n0", "n0"]
    assert [len(set(g)) for g in groups] == [1, 1] and groups[0][0] != groups[1][0]


@pytest.mark.parametrize("per_node", [4, 5])
def test_pack_keeps_each_supervisors_workers_on_one_node_2_nodes(per_node):
    """The seed tree (2 supervisors x 3 workers) on 2 nodes: with 4 ranks a node (7 host ranks)
    the supervisors share a rank of the node that has one to spare."""
    sups, groups = tree(driver_layout(2, per_node), 2, 3)
    assert len(set(sups)) == 1
    assert [len(set(g)) for g in groups] == [1, 1] and groups[0][0] != groups[1][0]


def test_pack_keeps_each_supervisors_workers_on_one_node_100_nodes():
    """100 nodes x 4 ranks, 30 supervisors x 4 workers: the supervisors fill the driver's node
    (10 to a rank), every group gets a node of its own."""
    p = driver_layout(100, 4)
    sups, groups = tree(p, 30, 4)
    assert set(sups) == {"n0"}
    assert all(len(set(g)) == 1 for g in groups)
    assert len({g[0] for g in groups}) == 30


def test_small_instances_fill_ranks_in_use_first():
    p = pool(nodes=2, per_node=2)
    big = p.place(Demand(cpu=800, memory=0), group="a")  # 200 left on that rank
    assert p.place(Demand(cpu=200, memory=0), group="b") == big  # best fit, across groups
    small = p.place(Demand(cpu=100, memory=0), group="c")  # opens a rank: the next ones share it
    assert small != big and p.place(Demand(cpu=100, memory=0), group="d") == small
    # A demand over a quarter of a rank is not "small": a new group takes the roomiest node.
    assert p.node_of(p.place(Demand(cpu=500, memory=0), group="e")) != p.node_of(big)


def test_pack_group_prefers_its_node_even_if_busier():
    p = pool(nodes=2, per_node=4)
    first = p.place(Demand(cpu=1000, memory=0), group="g")
    node = p.node_of(first)
    for _ in range(2):
        assert p.node_of(p.place(Demand(cpu=1000, memory=0), group="g")) == node


def test_spread_spreads_over_nodes():
    p = pool(nodes=4, per_node=4)
    d = Demand(cpu=100, memory=100)
    ranks = [p.place(d, group="g", policy="spread") for _ in range(4)]
    assert sorted(p.node_of(r) for r in ranks) == ["n0", "n1", "n2", "n3"]
    # Fifth goes to a node with one member, onto the emptiest rank there.
    fifth = p.place(d, group="g", policy="spread")
    assert fifth not in ranks
    # Without a group, spread still picks the emptiest rank.
    q = pool(nodes=1, per_node=4)
    assert len({q.place(d, policy="spread") for _ in range(4)}) == 4


def test_unknown_policy():
    p = pool()
    with pytest.raises(ValueError, match="pack, spread"):
        p.place(Demand(), policy="random")


def test_release_returns_capacity_exactly():
    p = pool(nodes=1, per_node=2, custom={"gpu": 1})
    d = Demand(cpu=333, memory=777, custom={"gpu": 0.1})
    placed = [(p.place(d, group="g"), d) for _ in range(6)]
    assert all(r is not None for r, _ in placed)
    total = p.usage()["total"]
    assert total["cpu_used"] == 6 * 333 and total["memory_used"] == 6 * 777
    assert total["custom_used"]["gpu"] == pytest.approx(0.6)
    for r, dd in placed:
        p.release(r, dd, group="g")
    total = p.usage()["total"]
    assert (total["cpu_used"], total["memory_used"], total["custom_used"]) == (0, 0, {"gpu": 0.0})
    assert all(row["custom_used"] == {"gpu": 0.0} for row in p.usage()["ranks"])


def test_over_release_errors_and_changes_nothing():
    p = pool(nodes=1, per_node=1)
    r = p.place(Demand(cpu=100, memory=100))
    before = p.usage()
    with pytest.raises(ValueError, match="exceeds"):
        p.release(r, Demand(cpu=200, memory=100))
    with pytest.raises(ValueError, match="exceeds"):
        p.release(r, Demand(cpu=100, memory=100, custom={"gpu": 1}))
    with pytest.raises(ValueError, match="group"):
        p.release(r, Demand(cpu=100, memory=100), group="nobody")
    with pytest.raises(ValueError, match="not a host rank"):
        p.release(99, Demand())
    assert p.usage() == before
    p.release(r, Demand(cpu=100, memory=100))
    with pytest.raises(ValueError):
        p.release(r, Demand(cpu=100, memory=100))


def test_custom_resources_matched():
    p = Placement([RankCapacity(1, "a", 1000, 1000, {}),
                   RankCapacity(2, "b", 1000, 1000, {"gpu": 2})])
    d = Demand(cpu=100, memory=100, custom={"gpu": 1})
    assert p.place(d) == 2
    assert p.place(d) == 2
    assert p.place(d) is None  # gpus exhausted although cpu is free
    assert p.place(Demand(cpu=100, memory=100)) in (1, 2)
    assert used(p, 2)["custom_used"] == {"gpu": 2.0}


def test_memory_accounted():
    p = pool(nodes=1, per_node=1, cpu=10_000, memory=1000)
    assert p.place(Demand(cpu=100, memory=600)) == 1
    assert p.place(Demand(cpu=100, memory=600)) is None
    assert p.place(Demand(cpu=100, memory=400)) == 1
    assert used(p, 1)["memory_used"] == 1000


def test_remove_rank():
    p = pool(nodes=2, per_node=2)
    d = Demand(cpu=1000, memory=0)
    r = p.place(d, group="g")
    assert p.remove_rank(r) is True
    assert p.remove_rank(r) is False  # already gone
    assert p.remove_rank(12345) is False  # never a host rank
    assert not p.is_alive(r) and r not in p.live_ranks
    p.release(r, d, group="g")  # ignored silently
    got = {p.place(d, group="g") for _ in range(3)}
    assert r not in got and None not in got
    assert p.place(d) is None  # only 3 live ranks
    row = used(p, r)
    assert row["alive"] is False and row["cpu_used"] == 0
    total = p.usage()["total"]
    assert total["ranks_alive"] == 3 and total["ranks_dead"] == 1
    assert total["cpu_total"] == 3000 and total["cpu_used"] == 3000


def test_remove_all_ranks_of_a_node():
    p = pool(nodes=2, per_node=2)
    for rank in (1, 2):
        p.remove_rank(rank)
    assert p.usage()["total"]["nodes"] == 1
    got = [p.place(Demand(cpu=1000, memory=0)) for _ in range(3)]
    assert sorted(got[:2]) == [3, 4] and got[2] is None


def test_usage_totals_and_total_capacity():
    p = pool(nodes=2, per_node=3, cpu=2000, memory=1000, custom={"gpu": 1})
    u = p.usage()
    assert len(u["ranks"]) == 6
    assert set(u["ranks"][0]) == {"rank", "node", "cpu_total", "cpu_used", "memory_total",
                                  "memory_used", "custom_total", "custom_used", "alive"}
    t = u["total"]
    assert (t["cpu_total"], t["memory_total"], t["custom_total"]) == (12000, 6000, {"gpu": 6.0})
    assert (t["ranks_alive"], t["nodes"]) == (6, 2)
    p.place(Demand(cpu=1500, memory=200, custom={"gpu": 0.5}))
    t = p.usage()["total"]
    assert (t["cpu_used"], t["memory_used"], t["custom_used"]) == (1500, 200, {"gpu": 0.5})
    assert p.total_capacity() == {"cpu": 12000, "memory": 6000, "custom": {"gpu": 6.0}}
    assert p.nodes == ["n0", "n1"]


# ----------------------------------------------------------------- property test

_DEMANDS = [
    Demand(cpu=100, memory=100),
    Demand(cpu=1000, memory=500),
    Demand(cpu=250, memory=0, custom={"gpu": 0.5}),
    Demand(cpu=0, memory=300),
    Demand(cpu=700, memory=1200, custom={"gpu": 1}),
]

_op = st.one_of(
    st.tuples(st.just("place"), st.integers(0, len(_DEMANDS) - 1), st.integers(0, 3),
              st.sampled_from(["pack", "spread"])),
    st.tuples(st.just("release"), st.integers(0, 10_000)),
    st.tuples(st.just("remove"), st.integers(1, 9)),
)


def _check_invariants(p: Placement, shadow: dict[int, list]) -> None:
    for row in p.usage()["ranks"]:
        assert 0 <= row["cpu_used"] <= row["cpu_total"]
        assert 0 <= row["memory_used"] <= row["memory_total"]
        for k, v in row["custom_used"].items():
            assert -1e-9 <= v <= row["custom_total"][k] + 1e-9
        if row["alive"]:
            mine = shadow[row["rank"]]
            assert row["cpu_used"] == sum(d.cpu for d, _ in mine)
            assert row["memory_used"] == sum(d.memory for d, _ in mine)
        else:
            assert row["cpu_used"] == 0
    # Group bookkeeping: members per (group, node) match what is live.
    expected: dict = {}
    for rank, mine in shadow.items():
        for _, g in mine:
            key = (g, p.node_of(rank))
            expected[key] = expected.get(key, 0) + 1
    actual = {(g, node.name): n for g, per_node in p._group_nodes.items()
              for node, n in per_node.items()}
    assert actual == expected


@settings(max_examples=150, deadline=None)
@given(ops=st.lists(_op, max_size=80), gpu_ranks=st.sets(st.integers(1, 8)))
def test_random_place_release_never_overcommits(ops, gpu_ranks):
    caps = [RankCapacity(r, f"n{(r - 1) // 3}", 1000, 2000,
                         {"gpu": 1.0} if r in gpu_ranks else {}) for r in range(1, 9)]
    p = Placement(caps)
    shadow: dict[int, list] = {r: [] for r in range(1, 9)}
    live: list[tuple[int, Demand, int]] = []
    for op in ops:
        if op[0] == "place":
            d, g = _DEMANDS[op[1]], op[2]
            r = p.place(d, group=g, policy=op[3])
            if r is not None:
                assert p.is_alive(r)
                live.append((r, d, g))
                shadow[r].append((d, g))
        elif op[0] == "release" and live:
            r, d, g = live.pop(op[1] % len(live))
            p.release(r, d, group=g)
            if p.is_alive(r):
                shadow[r].remove((d, g))
        elif op[0] == "remove":
            p.remove_rank(op[1])  # rank 9 is not a host rank: returns False
            shadow[op[1]] = []
        _check_invariants(p, shadow)
    for r, d, g in live:
        p.release(r, d, group=g)
    total = p.usage()["total"]
    assert total["cpu_used"] == 0 and total["memory_used"] == 0
    assert all(v == 0 for v in total["custom_used"].values())
    # Fully released pool accepts a whole-rank demand on every live rank again.
    n_live = len(p.live_ranks)
    got = [p.place(Demand(cpu=1000, memory=2000)) for _ in range(n_live)]
    assert sorted(got) == p.live_ranks
