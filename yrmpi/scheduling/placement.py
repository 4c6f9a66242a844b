"""Pure placement logic: which host rank gets an instance.

The scheduler on rank 0 owns one :class:`Placement` and calls it for every
instance it creates or destroys.  Nothing here touches MPI, threads or I/O, so
the same object can be driven by a unit test or a 10,000-rank simulation.

Units: ``cpu`` in millicores (``1000`` is one core), ``memory`` in MB, custom
resources as floats.  Custom amounts are kept internally as fixed-point
integers (resolution ``1e-6``) so that reserving and releasing the same demand
returns a rank to *exactly* its starting state; float drift would otherwise
make a long-running scheduler slowly lose or invent capacity.

Cost: a placement looks at the nodes holding the group first, then walks the
nodes ordered by free cpu (rejecting a node in O(1) when its roomiest rank is
too small), and inside a node bisects a list of ranks sorted by free cpu.  That
is about O(nodes + ranks-per-node) in the worst case and O(log) when the first
candidate fits, never a scan over every rank.

Small instances (a quarter of a rank or less: supervisors at ``cpu=100``) are
packed apart from that walk, so they do not break the whole ranks that groups of
one-rank workers need on one node: first onto a rank already in use (best fit
over every node, a bisection), else onto the node where taking one empty rank
keeps the most nodes at the largest number of empty ranks (an O(nodes) count,
once per rank the small instances open).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["POLICIES", "Demand", "Placement", "RankCapacity"]

#: Valid values for ``Placement.place(policy=...)``.
POLICIES = ("pack", "spread")

_SCALE = 1_000_000  # custom resources are stored as integer micro-units
SMALL_FRACTION = 4  # a demand of at most 1/SMALL_FRACTION of the largest rank's cpu is "small"

# Hints appended to "cannot ever fit" messages; they name the knobs a user turns.
CPU_HINT = (
    "lower cpu= or give ranks more capacity (YRMPI_CPU_PER_RANK / Config(cpu_per_rank=...))"
)
MEMORY_HINT = (
    "lower memory= or give ranks more memory "
    "(YRMPI_MEMORY_PER_RANK / Config(memory_per_rank=...))"
)
CUSTOM_HINT = "(YRMPI_RESOURCES / Config(custom_resources=...))"


def _to_units(value: float) -> int:
    return int(round(value * _SCALE))


def _from_units(units: int) -> float:
    return units / _SCALE


class _FrozenMapping(Mapping):
    """Read-only, hashable dict so that a frozen :class:`Demand` can be a dict key."""

    __slots__ = ("_data", "_hash")

    def __init__(self, data: Mapping[str, float] = ()) -> None:
        self._data: dict[str, float] = dict(data)
        self._hash: int | None = None

    def __getitem__(self, key: str) -> float:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._data.items()))
        return self._hash

    def __repr__(self) -> str:
        return repr(self._data)

    def __reduce__(self) -> tuple:
        # Never ship the cached hash: str hashes differ between processes.
        return (_FrozenMapping, (self._data,))


@dataclass(frozen=True)
class Demand:
    """What one instance asks for; frozen and hashable so it can key caches.

    ``custom`` accepts any mapping (usually a dict) and is stored as a read-only,
    hashable mapping.  Zero-valued custom entries ask for nothing.
    """

    cpu: int = 500
    memory: int = 500
    custom: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.cpu < 0 or self.memory < 0:
            raise ValueError(f"Demand cpu/memory must be >= 0, got cpu={self.cpu} "
                             f"memory={self.memory}")
        custom = _FrozenMapping(self.custom)
        for name, value in custom.items():
            if value < 0:
                raise ValueError(f"Demand custom resource {name!r} must be >= 0, got {value}")
        object.__setattr__(self, "custom", custom)
        # Positive custom asks in micro-units, precomputed once (not a dataclass field,
        # so it does not take part in eq/hash/repr).
        units = tuple(sorted((k, _to_units(v)) for k, v in custom.items() if _to_units(v) > 0))
        object.__setattr__(self, "_units", units)


@dataclass
class RankCapacity:
    """Capacity of one host rank, as declared when the pool is built."""

    rank: int
    node: str
    cpu: int
    memory: int
    custom: dict[str, float] = field(default_factory=dict)


class _Rank:
    __slots__ = (
        "rank", "node", "cpu_total", "memory_total", "custom_total",
        "cpu_free", "memory_free", "custom_free", "groups", "alive",
    )

    def __init__(self, cap: RankCapacity, node: _Node) -> None:
        self.rank = cap.rank
        self.node = node
        self.cpu_total = int(cap.cpu)
        self.memory_total = int(cap.memory)
        self.custom_total = {k: _to_units(v) for k, v in cap.custom.items()}
        self.cpu_free = self.cpu_total
        self.memory_free = self.memory_total
        self.custom_free = dict(self.custom_total)
        self.groups: dict[Hashable, int] = {}  # group -> members reserved on this rank
        self.alive = True


class _Node:
    __slots__ = ("name", "index", "key", "by_free", "cpu_free", "memory_free", "custom_free", "empty")

    def __init__(self, name: str, index: int) -> None:
        self.name = name
        self.index = index
        self.key: tuple[int, int] = (0, -index)  # entry in Placement._order
        self.by_free: list[tuple[int, int]] = []  # sorted (cpu_free, rank) of live ranks
        self.cpu_free = 0
        self.memory_free = 0
        self.custom_free: dict[str, int] = {}
        self.empty = 0  # live ranks with nothing reserved on their cpu

    def may_fit(self, cpu: int, memory: int, units: tuple[tuple[str, int], ...]) -> bool:
        """Cheap necessary condition: roomiest rank has the cpu, node sums cover the rest."""
        by_free = self.by_free
        if not by_free or by_free[-1][0] < cpu or self.memory_free < memory:
            return False
        for name, amount in units:
            if self.custom_free.get(name, 0) < amount:
                return False
        return True


def _rank_fits(r: _Rank, memory: int, units: tuple[tuple[str, int], ...]) -> bool:
    if r.memory_free < memory:
        return False
    for name, amount in units:
        if r.custom_free.get(name, 0) < amount:
            return False
    return True


class Placement:
    """Capacity bookkeeping and rank choice for all host ranks of one job.

    Reservations are anonymous (the caller remembers which rank it got and the
    demand it placed); ``group`` is only used to keep an owner's children
    together ("pack") or apart ("spread").
    """

    def __init__(self, ranks: Iterable[RankCapacity]) -> None:
        self._ranks: dict[int, _Rank] = {}
        self._nodes: dict[str, _Node] = {}
        self._node_list: list[_Node] = []
        # Sorted (node cpu_free, -node index) for live nodes: walk it backwards to get
        # "most free cpu first, lower index on ties".
        self._order: list[tuple[int, int]] = []
        self._group_nodes: dict[Hashable, dict[_Node, int]] = {}
        self._explain_cache: dict[Demand, str | None] = {}
        # Sorted (cpu_free, rank) of live ranks in use but not full: where small demands go first.
        self._partial: list[tuple[int, int]] = []
        self._max_cpu = 0
        for cap in ranks:
            if cap.rank in self._ranks:
                raise ValueError(f"rank {cap.rank} declared twice")
            if cap.cpu < 0 or cap.memory < 0 or any(v < 0 for v in cap.custom.values()):
                raise ValueError(f"rank {cap.rank} declares negative capacity: {cap}")
            node = self._nodes.get(cap.node)
            if node is None:
                node = _Node(cap.node, len(self._node_list))
                self._nodes[cap.node] = node
                self._node_list.append(node)
            r = _Rank(cap, node)
            self._ranks[cap.rank] = r
            node.by_free.append((r.cpu_free, r.rank))
            node.empty += 1
            self._max_cpu = max(self._max_cpu, r.cpu_total)
            node.cpu_free += r.cpu_free
            node.memory_free += r.memory_free
            for name, amount in r.custom_free.items():
                node.custom_free[name] = node.custom_free.get(name, 0) + amount
        for node in self._node_list:
            node.by_free.sort()
            if node.by_free:
                node.key = (node.cpu_free, -node.index)
                self._order.append(node.key)
        self._order.sort()

    # ------------------------------------------------------------------ queries

    @property
    def live_ranks(self) -> list[int]:
        """Ranks still in the pool, ascending."""
        return sorted(r.rank for r in self._ranks.values() if r.alive)

    @property
    def nodes(self) -> list[str]:
        """Node names in declaration order (including nodes whose ranks all died)."""
        return [n.name for n in self._node_list]

    def node_of(self, rank: int) -> str:
        """Node name of a rank (dead or alive)."""
        return self._ranks[rank].node.name

    def is_alive(self, rank: int) -> bool:
        """False for removed ranks and for ranks that were never host ranks."""
        r = self._ranks.get(rank)
        return r is not None and r.alive

    def total_capacity(self) -> dict[str, Any]:
        """Declared capacity summed over live ranks: {cpu, memory, custom}."""
        cpu = memory = 0
        custom: dict[str, int] = {}
        for r in self._ranks.values():
            if r.alive:
                cpu += r.cpu_total
                memory += r.memory_total
                for name, amount in r.custom_total.items():
                    custom[name] = custom.get(name, 0) + amount
        return {
            "cpu": cpu,
            "memory": memory,
            "custom": {k: _from_units(v) for k, v in custom.items()},
        }

    def usage(self) -> dict[str, Any]:
        """Per-rank and total capacity/usage; backs ``yr.resources()``.

        Returns ``{"ranks": [per-rank dict, ...], "total": {...}}``.  Dead ranks are
        listed with ``alive=False`` and zero usage and are left out of the totals.
        """
        rows = []
        tot = {"cpu_total": 0, "cpu_used": 0, "memory_total": 0, "memory_used": 0}
        ctot: dict[str, int] = {}
        cused: dict[str, int] = {}
        for rank in sorted(self._ranks):
            r = self._ranks[rank]
            cpu_used = r.cpu_total - r.cpu_free if r.alive else 0
            memory_used = r.memory_total - r.memory_free if r.alive else 0
            custom_used = {
                k: (v - r.custom_free[k] if r.alive else 0) for k, v in r.custom_total.items()
            }
            rows.append({
                "rank": rank,
                "node": r.node.name,
                "cpu_total": r.cpu_total,
                "cpu_used": cpu_used,
                "memory_total": r.memory_total,
                "memory_used": memory_used,
                "custom_total": {k: _from_units(v) for k, v in r.custom_total.items()},
                "custom_used": {k: _from_units(v) for k, v in custom_used.items()},
                "alive": r.alive,
            })
            if r.alive:
                tot["cpu_total"] += r.cpu_total
                tot["cpu_used"] += cpu_used
                tot["memory_total"] += r.memory_total
                tot["memory_used"] += memory_used
                for k, v in r.custom_total.items():
                    ctot[k] = ctot.get(k, 0) + v
                    cused[k] = cused.get(k, 0) + custom_used[k]
        alive = sum(1 for r in self._ranks.values() if r.alive)
        total: dict[str, Any] = dict(tot)
        total["custom_total"] = {k: _from_units(v) for k, v in ctot.items()}
        total["custom_used"] = {k: _from_units(v) for k, v in cused.items()}
        total["ranks_alive"] = alive
        total["ranks_dead"] = len(self._ranks) - alive
        total["nodes"] = len({r.node.name for r in self._ranks.values() if r.alive})
        return {"ranks": rows, "total": total}

    def explain_unplaceable(self, demand: Demand) -> str | None:
        """Why ``demand`` can never be placed, even on an empty pool; None if it can.

        Lets the scheduler fail a submission at once with the arithmetic instead of
        queueing it forever.  Cached per demand (dropped when a rank dies).
        """
        try:
            return self._explain_cache[demand]
        except KeyError:
            pass
        msg = self._explain(demand)
        if len(self._explain_cache) >= 4096:
            self._explain_cache.clear()
        self._explain_cache[demand] = msg
        return msg

    def _explain(self, demand: Demand) -> str | None:
        units: tuple[tuple[str, int], ...] = demand._units  # type: ignore[attr-defined]
        live = [r for r in self._ranks.values() if r.alive]
        if not live:
            return (f"no live host ranks left (all {len(self._ranks)} were removed); "
                    "nothing can be placed")
        for r in live:
            if (r.cpu_total >= demand.cpu and r.memory_total >= demand.memory
                    and all(r.custom_total.get(k, 0) >= v for k, v in units)):
                return None

        n = len(live)
        parts = []
        cpus = [r.cpu_total for r in live]
        if max(cpus) < demand.cpu:
            parts.append(
                f"asks cpu={demand.cpu} millicores but the largest rank has {max(cpus)} "
                f"({_spread_text(n, cpus, 'millicores')}); {CPU_HINT}"
            )
        mems = [r.memory_total for r in live]
        if max(mems) < demand.memory:
            parts.append(
                f"asks memory={demand.memory} MB but the largest rank has {max(mems)} MB "
                f"({_spread_text(n, mems, 'MB')}); {MEMORY_HINT}"
            )
        for name, amount in units:
            have = [r.custom_total[name] for r in live if name in r.custom_total]
            asked = f"{demand.custom[name]:g}"
            if not have:
                parts.append(
                    f"asks custom resource {name!r}={asked} but no rank declares it; "
                    f"declare it per rank {CUSTOM_HINT}"
                )
            elif max(have) < amount:
                parts.append(
                    f"asks custom resource {name!r}={asked} but the largest rank has "
                    f"{_from_units(max(have)):g} ({len(have)} of {n} host ranks declare it); "
                    f"lower it or declare more {name!r} per rank {CUSTOM_HINT}"
                )
        if not parts:
            asks = [f"cpu={demand.cpu} millicores", f"memory={demand.memory} MB"]
            asks += [f"{k!r}={demand.custom[k]:g}" for k, _ in units]
            parts.append(
                f"asks {', '.join(asks)} but no single host rank has all of it at once "
                f"({n} host ranks checked; each part alone fits some rank); "
                "lower the demand or give ranks uniform capacity"
            )
        return "; ".join(parts)

    # ------------------------------------------------------------------ mutation

    def place(
        self, demand: Demand, group: Hashable | None = None, policy: str = "pack"
    ) -> int | None:
        """Reserve ``demand`` on one live rank and return it; None if nothing fits now.

        "pack" keeps a group on as few nodes as possible (its nodes first, then the
        node with most free cpu) and best-fits inside a node so small demands share
        a rank.  "spread" prefers the node with fewest members of the group and the
        emptiest rank inside it.
        """
        if policy == "pack":
            r = self._find_pack(demand, group)
        elif policy == "spread":
            r = self._find_spread(demand, group)
        else:
            raise ValueError(f"unknown placement policy {policy!r}; valid: {', '.join(POLICIES)}")
        if r is None:
            return None
        self._apply(r, demand, group, -1)
        return r.rank

    def place_on_node(self, demand: Demand, node: str, group: Hashable | None = None) -> int | None:
        """Reserve ``demand`` on a live rank of ``node`` (best fit); None if it has no room."""
        n = self._nodes.get(node)
        units = demand._units  # type: ignore[attr-defined]
        if n is None or not n.by_free or not n.may_fit(demand.cpu, demand.memory, units):
            return None
        r = self._best_fit(n, demand, units)
        if r is None:
            return None
        self._apply(r, demand, group, -1)
        return r.rank

    def nodes_by_free_cpu(self) -> list[str]:
        """Live nodes, the most free cpu first (ties: declaration order)."""
        return [self._node_list[-neg_index].name for _, neg_index in reversed(self._order)]

    def release(self, rank: int, demand: Demand, group: Hashable | None = None) -> None:
        """Give back a reservation made by :meth:`place` on ``rank``.

        Silently ignored for a removed rank (its reservations died with it).  Giving
        back more than is reserved, or a group member that is not there, is a
        bookkeeping bug and raises ValueError without changing anything.
        """
        r = self._ranks.get(rank)
        if r is None:
            raise ValueError(f"release on rank {rank}, which is not a host rank")
        if not r.alive:
            return
        units: tuple[tuple[str, int], ...] = demand._units  # type: ignore[attr-defined]
        if (r.cpu_free + demand.cpu > r.cpu_total
                or r.memory_free + demand.memory > r.memory_total
                or (units and any(r.custom_free.get(k, 0) + v > r.custom_total.get(k, 0)
                                  for k, v in units))):
            raise ValueError(
                f"release of {demand} on rank {rank} exceeds what is reserved there "
                f"(cpu used {r.cpu_total - r.cpu_free}, memory used "
                f"{r.memory_total - r.memory_free})"
            )
        if group is not None and r.groups.get(group, 0) <= 0:
            raise ValueError(f"release on rank {rank} for group {group!r}, "
                             "which has no member reserved there")
        self._apply(r, demand, group, +1)

    def remove_rank(self, rank: int) -> bool:
        """Take a dead rank out of the pool for good; True if it was live.

        Its reservations and group memberships vanish with it; later releases
        naming it are ignored.  Unknown or already removed ranks return False.
        """
        r = self._ranks.get(rank)
        if r is None or not r.alive:
            return False
        node = r.node
        lst = node.by_free
        del lst[bisect_left(lst, (r.cpu_free, r.rank))]
        self._unmark(r)
        node.memory_free -= r.memory_free
        for name, amount in r.custom_free.items():
            node.custom_free[name] -= amount
        self._set_node_cpu(node, node.cpu_free - r.cpu_free)
        for group, count in r.groups.items():
            per_node = self._group_nodes[group]
            per_node[node] -= count
            if per_node[node] <= 0:
                del per_node[node]
                if not per_node:
                    del self._group_nodes[group]
        r.groups.clear()
        r.alive = False
        self._explain_cache.clear()
        return True

    # ------------------------------------------------------------------ internals

    def _best_fit(self, node: _Node, demand: Demand, units: tuple) -> _Rank | None:
        """Rank with the least cpu left over after placing (ties: lower rank)."""
        lst = node.by_free
        ranks = self._ranks
        memory = demand.memory
        for i in range(bisect_left(lst, (demand.cpu,)), len(lst)):
            r = ranks[lst[i][1]]
            if _rank_fits(r, memory, units):
                return r
        return None

    def _roomiest(self, node: _Node, demand: Demand, units: tuple) -> _Rank | None:
        """Rank with the most free cpu that fits (ties: higher rank)."""
        lst = node.by_free
        ranks = self._ranks
        cpu, memory = demand.cpu, demand.memory
        for i in range(len(lst) - 1, -1, -1):
            free, rank = lst[i]
            if free < cpu:
                break
            r = ranks[rank]
            if _rank_fits(r, memory, units):
                return r
        return None

    def _find_pack(self, demand: Demand, group: Hashable | None) -> _Rank | None:
        units = demand._units  # type: ignore[attr-defined]
        cpu, memory = demand.cpu, demand.memory
        tried: Mapping[_Node, int] = {}
        if group is not None:
            tried = self._group_nodes.get(group, {})
            if tried:
                # Most members first, then most free cpu: fewest nodes per group.
                for node in sorted(tried, key=lambda n: (-tried[n], -n.cpu_free, n.index)):
                    if node.may_fit(cpu, memory, units):
                        r = self._best_fit(node, demand, units)
                        if r is not None:
                            return r
        if 0 < cpu and cpu * SMALL_FRACTION <= self._max_cpu:
            r = self._pack_small(demand, units)
            if r is not None:
                return r
        nodes = self._node_list
        for _, neg_index in reversed(self._order):
            node = nodes[-neg_index]
            if node in tried or not node.may_fit(cpu, memory, units):
                continue
            r = self._best_fit(node, demand, units)
            if r is not None:
                return r
        return None

    def _pack_small(self, demand: Demand, units: tuple) -> _Rank | None:
        """A small demand: onto a rank already in use (least cpu left over), else onto an empty
        rank of the node whose loss of it costs the fewest whole-node groups."""
        ranks, partial, memory = self._ranks, self._partial, demand.memory
        for i in range(bisect_left(partial, (demand.cpu,)), len(partial)):
            r = ranks[partial[i][1]]
            if _rank_fits(r, memory, units):
                return r
        live = [n for n in self._node_list if n.by_free]
        if not live:
            return None
        counts = sorted((n.empty for n in live), reverse=True)
        top = counts[0]
        at_top = counts.count(top)
        second = counts[at_top] if at_top < len(counts) else -1

        def score(node: _Node) -> tuple[int, int, int, int]:
            """(nodes left at the largest empty count, that count, fewest empty, lowest index)."""
            if node.empty < top:
                kept, level = at_top, top
            elif at_top > 1:
                kept, level = at_top - 1, top
            else:
                level = max(top - 1, second)
                kept = 1 + (counts.count(level) if level == second else 0)
            return kept, level, -node.empty, -node.index

        for node in sorted((n for n in live if n.empty and n.may_fit(demand.cpu, memory, units)),
                           key=score, reverse=True):
            r = self._best_fit(node, demand, units)
            if r is not None:
                return r
        return None

    def _mark(self, r: _Rank) -> None:
        """Index a live rank by its use: empty (counted per node) or partly used (`_partial`)."""
        if r.cpu_free == r.cpu_total:
            r.node.empty += 1
        elif r.cpu_free > 0:
            insort(self._partial, (r.cpu_free, r.rank))

    def _unmark(self, r: _Rank) -> None:
        if r.cpu_free == r.cpu_total:
            r.node.empty -= 1
        elif r.cpu_free > 0:
            del self._partial[bisect_left(self._partial, (r.cpu_free, r.rank))]

    def _find_spread(self, demand: Demand, group: Hashable | None) -> _Rank | None:
        units = demand._units  # type: ignore[attr-defined]
        cpu, memory = demand.cpu, demand.memory
        members: Mapping[_Node, int] = {}
        if group is not None:
            members = self._group_nodes.get(group, {})
        nodes = self._node_list
        # Nodes without members of the group, most free cpu first.
        for _, neg_index in reversed(self._order):
            node = nodes[-neg_index]
            if node in members or not node.may_fit(cpu, memory, units):
                continue
            r = self._roomiest(node, demand, units)
            if r is not None:
                return r
        # Then nodes that already have members: fewest first.
        for node in sorted(members, key=lambda n: (members[n], -n.cpu_free, n.index)):
            if node.may_fit(cpu, memory, units):
                r = self._roomiest(node, demand, units)
                if r is not None:
                    return r
        return None

    def _set_node_cpu(self, node: _Node, new_free: int) -> None:
        """Move ``node`` in the free-cpu order; a node without live ranks leaves it."""
        order = self._order
        del order[bisect_left(order, node.key)]
        node.cpu_free = new_free
        node.key = (new_free, -node.index)
        if node.by_free:
            insort(order, node.key)

    def _apply(self, r: _Rank, demand: Demand, group: Hashable | None, sign: int) -> None:
        """Add ``sign * demand`` to the free capacity of ``r`` and keep indexes in step."""
        node = r.node
        cpu = sign * demand.cpu
        if cpu:
            lst = node.by_free
            del lst[bisect_left(lst, (r.cpu_free, r.rank))]
            self._unmark(r)
            r.cpu_free += cpu
            self._mark(r)
            insort(lst, (r.cpu_free, r.rank))
            self._set_node_cpu(node, node.cpu_free + cpu)
        memory = sign * demand.memory
        r.memory_free += memory
        node.memory_free += memory
        for name, amount in demand._units:  # type: ignore[attr-defined]
            r.custom_free[name] += sign * amount
            node.custom_free[name] += sign * amount
        if group is None:
            return
        per_node = self._group_nodes.setdefault(group, {})
        if sign < 0:
            r.groups[group] = r.groups.get(group, 0) + 1
            per_node[node] = per_node.get(node, 0) + 1
        else:
            r.groups[group] -= 1
            if not r.groups[group]:
                del r.groups[group]
            per_node[node] -= 1
            if not per_node[node]:
                del per_node[node]
                if not per_node:
                    del self._group_nodes[group]


def _spread_text(n: int, values: list[int], unit: str) -> str:
    lo, hi = min(values), max(values)
    if lo == hi:
        return f"{n} host ranks x {hi} {unit}"
    return f"{n} host ranks with {lo}..{hi} {unit} each"
