"""Scale simulation of yrmpi.scheduling.placement: 10,000 ranks, 100,000 placements with churn.

An independent shadow model (plain dicts) tracks what each rank holds, so the
invariants below are checked against arithmetic done outside Placement.
No wall-clock assertions: speed is a target, not a test condition.
"""

from __future__ import annotations

import random

from yrmpi.scheduling.placement import Demand, Placement, RankCapacity

NODES = 100
RANKS_PER_NODE = 100
CPU = 1000  # one core per rank, the usual MPI layout
MEMORY = 4000
TOTAL_PLACEMENTS = 100_000
FAILURES = 25

SUPERVISOR = Demand(cpu=100, memory=200)
WORKER = Demand(cpu=1000, memory=1000)
GROUP = (SUPERVISOR, WORKER, WORKER, WORKER)


def test_placement_simulation_100k_on_10k_ranks():
    rng = random.Random(20240611)
    node_of = {}
    caps = []
    for n in range(NODES):
        for i in range(RANKS_PER_NODE):
            rank = 1 + n * RANKS_PER_NODE + i
            node_of[rank] = f"node{n:03d}"
            caps.append(RankCapacity(rank, node_of[rank], CPU, MEMORY, {}))
    ranks_on = {}
    for rank, node in node_of.items():
        ranks_on.setdefault(node, []).append(rank)
    p = Placement(caps)

    # Shadow model.
    cpu_free = {r: CPU for r in node_of}
    mem_free = {r: MEMORY for r in node_of}
    node_cpu_free = {node: CPU * RANKS_PER_NODE for node in ranks_on}
    dead: set[int] = set()
    groups: dict[int, list[tuple[int, Demand]]] = {}  # gid -> [(rank, demand)]
    fail_at = set(rng.sample(range(TOTAL_PLACEMENTS), FAILURES))

    def reserve(rank: int, d: Demand) -> None:
        cpu_free[rank] -= d.cpu
        mem_free[rank] -= d.memory
        node_cpu_free[node_of[rank]] -= d.cpu
        assert cpu_free[rank] >= 0 and mem_free[rank] >= 0, f"rank {rank} over-committed"

    def unreserve(rank: int, d: Demand) -> None:
        cpu_free[rank] += d.cpu
        mem_free[rank] += d.memory
        node_cpu_free[node_of[rank]] += d.cpu

    def fits(rank: int, d: Demand) -> bool:
        return rank not in dead and cpu_free[rank] >= d.cpu and mem_free[rank] >= d.memory

    def release_group(gid: int) -> None:
        for rank, d in groups.pop(gid):
            p.release(rank, d, group=gid)  # ignored by Placement for dead ranks
            if rank not in dead:
                unreserve(rank, d)

    placed = 0
    next_gid = 0
    spills = kept_together = nones = checked_nones = 0
    target = 2500
    while placed < TOTAL_PLACEMENTS:
        if placed % 5000 < 4:
            # Oscillate load: sometimes comfortable, sometimes beyond capacity.
            target = rng.choice((1500, 2500, 3000, 3400))
        if len(groups) >= target:
            release_group(rng.choice(list(groups)))
            continue
        gid = next_gid
        next_gid += 1
        members: list[tuple[int, Demand]] = []
        groups[gid] = members
        for d in GROUP:
            group_nodes = {node_of[r] for r, _ in members if r not in dead}
            check_small = d is SUPERVISOR and next_gid % 50 == 0  # a full scan is O(ranks): sample it
            if check_small:
                in_use = [cpu_free[r] for r in node_of if 0 < cpu_free[r] < CPU and fits(r, d)]
            rank = p.place(d, group=gid, policy="pack")
            if rank is None:
                nones += 1
                if checked_nones < 200:  # full scan is O(ranks): sample it
                    checked_nones += 1
                    assert not any(fits(r, d) for r in node_of), "None although a rank fits"
                break
            assert rank not in dead and p.is_alive(rank), "placed on a dead rank"
            reserve(rank, d)
            members.append((rank, d))
            placed += 1
            if check_small:
                # A small instance goes onto the fullest rank already in use that has room (best
                # fit), and opens an empty rank only when no rank in use has room.
                if in_use:
                    assert cpu_free[rank] + d.cpu == min(in_use)
                else:
                    assert cpu_free[rank] + d.cpu == CPU
            elif d is not SUPERVISOR and group_nodes:
                if node_of[rank] in group_nodes:
                    kept_together += 1
                else:
                    # Pack only leaves the group's node(s) when none of their ranks fits.
                    spills += 1
                    assert not any(fits(r, d) for n in group_nodes for r in ranks_on[n])
            if placed in fail_at:
                victim = rng.choice([r for r in node_of if r not in dead])
                assert p.remove_rank(victim)
                dead.add(victim)
                node_cpu_free[node_of[victim]] -= cpu_free[victim]
            if placed % 10_000 == 0:
                _compare(p, cpu_free, mem_free, dead)
        if not members:  # not even a supervisor fits: the cluster is full, make room
            groups.pop(gid)
            if groups:
                release_group(rng.choice(list(groups)))

    _compare(p, cpu_free, mem_free, dead)
    assert nones > 0, "simulation never filled the cluster; raise the targets"
    assert kept_together > 10 * spills
    for gid in list(groups):
        release_group(gid)
    total = p.usage()["total"]
    assert total["cpu_used"] == 0 and total["memory_used"] == 0
    assert total["ranks_dead"] == FAILURES
    assert total["cpu_total"] == CPU * (NODES * RANKS_PER_NODE - FAILURES)
    assert p._group_nodes == {}


def _compare(p: Placement, cpu_free: dict, mem_free: dict, dead: set) -> None:
    """Placement's view equals the shadow model; nothing over-committed."""
    for row in p.usage()["ranks"]:
        rank = row["rank"]
        assert row["alive"] == (rank not in dead)
        assert 0 <= row["cpu_used"] <= row["cpu_total"]
        assert 0 <= row["memory_used"] <= row["memory_total"]
        if row["alive"]:
            assert row["cpu_used"] == CPU - cpu_free[rank]
            assert row["memory_used"] == MEMORY - mem_free[rank]
