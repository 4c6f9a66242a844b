"""The scheduler on rank 0: the registry of instances, their owners and their ranks.

Every creation passes through here (placement is the pure logic in placement.py); calls never
do. It frees capacity when an instance ends, ends the instances that instance owned, and
gives waiting creations the room that freed up, or a clear error when their time runs out.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..core import errors
from ..core.messages import (
    Create,
    CreateFailed,
    CreateSpec,
    Drained,
    Ended,
    Gone,
    InstanceEnded,
    Kill,
    ListNames,
    Locate,
    Lookup,
    Moved,
    Placed,
    ProbeResult,
    Reply,
    Resources,
    RgCreate,
    RgRemove,
    Terminate,
)
from ..core.rank import Rank
from . import affinity
from .deadlock import DeadlockProbe
from .placement import Demand, Placement


@dataclass
class Record:
    iid: int
    cls: str
    owner: int | None
    creator: int
    demand: Demand
    spec: CreateSpec
    deadline: float
    rank: int | None = None
    state: str = "waiting"  # waiting -> placed -> ended
    waiting_since: float = 0.0
    restarts: int = 0
    children: set[int] = field(default_factory=set)
    kill_waiters: list[int] = field(default_factory=list)
    name_waiters: list[tuple[int, int]] = field(default_factory=list)
    bundle: Bundle | None = None  # placed inside a resource group's bundle (its capacity, not placement's)
    restart_when_ended: bool = False  # killed with a restart (Kill.restart): comes back once ended


@dataclass
class Bundle:
    """One bundle of a resource group: capacity reserved on one rank, lent to its instances."""

    index: int
    rank: int
    demand: Demand
    cpu: int  # free
    memory: int
    custom: dict[str, float]
    group: str = ""
    removed: bool = False

    def fits(self, d: Demand) -> bool:
        return (d.cpu <= self.cpu and d.memory <= self.memory
                and all(self.custom.get(k, 0) >= v for k, v in d.custom.items() if v))

    def take(self, d: Demand, sign: int = -1) -> None:
        self.cpu += sign * d.cpu
        self.memory += sign * d.memory
        for k, v in d.custom.items():
            self.custom[k] = self.custom.get(k, 0) + sign * v


RG_STRATEGIES = ("", "NONE", "PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


@dataclass
class PendingRg:
    """A resource group asked for whose bundles do not fit yet."""

    req_id: int
    requester: int
    name: str
    bundles: list  # (cpu, memory, custom) each
    strategy: str

    @property
    def key(self) -> tuple[str, str]:
        """Its bundles' group in placement (kept together or apart by the strategy)."""
        return ("rg", self.name)


def _rg_place(placement: Placement, request: PendingRg) -> tuple[list[Bundle], str | None]:
    """Reserve every bundle of a resource group in `placement` by its strategy: the bundles, or
    ([], why not) with nothing reserved. PACK and SPREAD are preferences; STRICT_PACK takes the
    roomiest node that holds them all, STRICT_SPREAD one node per bundle."""
    if request.strategy == "STRICT_PACK":
        for node in placement.nodes_by_free_cpu():
            placed, _ = _rg_place_each(placement, request, lambda d, n=node: placement.place_on_node(d, n, request.key))
            if placed:
                return placed, None
        return [], "STRICT_PACK: no node has room for all the bundles"
    policy = "spread" if "SPREAD" in request.strategy else "pack"
    placed, problem = _rg_place_each(placement, request, lambda d: placement.place(d, group=request.key,
                                                                                 policy=policy))
    if problem is None and request.strategy == "STRICT_SPREAD":
        nodes = {placement.node_of(b.rank) for b in placed}
        if len(nodes) < len(placed):
            _rg_release(placement, request, placed)
            return [], f"STRICT_SPREAD: {len(placed)} bundles but only {len(nodes)} nodes have room"
    return placed, problem


def _rg_place_each(placement: Placement, request: PendingRg,
                   place: Callable[[Demand], int | None]) -> tuple[list[Bundle], str | None]:
    placed: list[Bundle] = []
    for index, (cpu, memory, custom) in enumerate(request.bundles):
        demand = Demand(cpu, memory, custom)
        problem = placement.explain_unplaceable(demand)
        rank = None if problem else place(demand)
        if rank is None:
            _rg_release(placement, request, placed)
            return [], problem or (f"bundle {index} ({cpu} millicores, {memory} MB, {custom or 'no custom'}) "
                                   "does not fit in the free capacity")
        placed.append(Bundle(index, rank, demand, cpu, memory, dict(custom), group=request.name))
    return placed, None


def _rg_release(placement: Placement, request: PendingRg, placed: list[Bundle]) -> None:
    for b in placed:
        placement.release(b.rank, b.demand, group=request.key)


class RecordWatcher(Protocol):
    """Another role of rank 0 that follows the records (the group registry)."""

    def record_added(self, rec: Record) -> None: ...

    def record_ended(self, rec: Record) -> None: ...

    def member_restarted(self, rec: Record) -> None: ...


ENDED_MEMORY_S = 10.0  # how long an ended owner is remembered, to refuse creations still in flight


class Scheduler:
    def __init__(self, here: Rank, placement: Placement) -> None:
        self.here = here
        self.placement = placement
        self.records: dict[int, Record] = {}
        self.waiting: list[Record] = []
        self.draining: dict[int, Record] = {}
        self.names: dict[tuple[str, str], int] = {}
        self.ended_owners: dict[int, float] = {}
        self.last_change = here.clock()
        self.deadlock = DeadlockProbe(here, lambda: self.last_change, self._declare_deadlock)
        # communicator subgroups: membership, epochs, tear-downs (it reads our records, sends from `here`)
        self.watchers: list[RecordWatcher] = []  # the runtime adds the group registry
        self._rank_labels: dict[int, dict] = {}  # affinity: each host rank's labels
        self.rgroups: dict[str, list[Bundle]] = {}  # resource groups: name -> bundles
        self.rg_pending: dict[str, PendingRg] = {}  # resource groups waiting for room, in request order

    def handlers(self) -> dict[type, Callable[..., None]]:
        return {Create: self.on_create, Ended: self.on_ended, Kill: self.on_kill, Lookup: self.on_lookup,
                Locate: self.on_locate, Resources: self.on_resources, Drained: self.on_drained,
                ListNames: self.on_list_names, RgCreate: self.on_rg_create, RgRemove: self.on_rg_remove,
                ProbeResult: self.deadlock.on_probe_result}

    # -- creation --------------------------------------------------------------------------
    def on_create(self, iid: int, creator: int, owner: int | None, spec: CreateSpec) -> None:
        demand = Demand(spec.cpu, spec.memory, spec.custom)
        problem = self.placement.explain_unplaceable(demand)
        if not problem and spec.rg:
            problem = self._rg_problem(spec.rg, demand)
            if problem:
                self._fail(creator, iid, errors.ERR_PARAM_INVALID, f"cannot create {spec.cls}: {problem}")
                return
        elif not problem and spec.affinity:
            never = affinity.never_possible(spec.affinity, [self._labels_of(r) for r in self.placement.live_ranks])
            problem = never and f"{never}; labels come from Config(labels=...) or YRMPI_LABELS"
        if problem:
            self._fail(creator, iid, errors.ERR_RESOURCE_NOT_ENOUGH, f"cannot create {spec.cls}: {problem}")
            return
        owner_rec = self.records.get(owner) if owner is not None else None
        if owner in self.ended_owners:
            self._fail(creator, iid, errors.ERR_INSTANCE_EXITED,
                       f"cannot create {spec.cls}: the instance creating it has ended")
            return
        if spec.name:
            key = (spec.namespace, spec.name)
            existing = self.records.get(self.names.get(key, -1))
            if existing is not None and existing.state != "ended":
                # As in the SDK, a creation with the name of a live instance gets that instance
                # (get_if_exists or not); its constructor arguments are not used.
                if existing.state == "placed":
                    self.here.send(creator, Placed(iid, existing.rank, existing.iid))
                else:
                    existing.name_waiters.append((creator, iid))
                return
            self.names[key] = iid
        timeout = spec.timeout_ms
        deadline = math.inf if timeout < 0 else self.here.clock() + timeout / 1000
        rec = Record(iid, spec.cls, owner, creator, demand, spec, deadline, waiting_since=self.here.clock())
        self.records[iid] = rec
        for watcher in self.watchers:
            watcher.record_added(rec)
        if owner_rec is not None:
            owner_rec.children.add(iid)
        if not self._try_place(rec):
            self.waiting.append(rec)

    def _labels_of(self, rank: int) -> dict:
        labels = self._rank_labels.get(rank)
        if labels is None:
            user = self.here.settings.get("labels") or {}
            labels = self._rank_labels[rank] = affinity.rank_labels(rank, self.placement.node_of(rank), user)
        return labels

    def _instance_labels(self, rank: int, scope: str) -> list[dict]:
        node = self.placement.node_of(rank)
        out = []
        for rec in self.records.values():
            if rec.state != "placed" or not rec.spec.labels:
                continue
            if rec.rank == rank or (scope == "NODE" and self.placement.node_of(rec.rank) == node):
                out.append(dict(label.split("=", 1) if "=" in label else (label, "") for label in rec.spec.labels))
        return out

    def _allows(self, affinities: tuple, rank: int) -> bool:
        for aff in affinities:
            instances = self._instance_labels(rank, aff[2]) if aff[0] == "INSTANCE" else ()
            if not affinity.satisfied(aff, self._labels_of(rank), instances):
                return False
        return True

    def _place_with_affinity(self, rec: Record) -> int | None:
        """Placement's choice among the ranks the affinities allow: every choice that does not
        match stays reserved while the next is asked for, then all are given back. Preferred
        affinities are tried first with the required ones, then the required ones alone."""
        wanted = rec.spec.affinity
        must = affinity.required(wanted)
        attempts = [wanted] if must == wanted else [wanted, must]
        for affinities in attempts:
            if not affinities:
                return self.placement.place(rec.demand, group=rec.owner, policy=rec.spec.policy)
            tried: list[int] = []
            limit = 4 * max(1, len(self.placement.live_ranks))
            try:
                while len(tried) < limit:
                    rank = self.placement.place(rec.demand, group=rec.owner, policy=rec.spec.policy)
                    if rank is None:
                        break
                    if self._allows(affinities, rank):
                        return rank
                    tried.append(rank)
            finally:
                for rank in tried:
                    self.placement.release(rank, rec.demand, group=rec.owner)
        return None

    # -- resource groups -------------------------------------------------------------------
    def on_rg_create(self, req_id: int, requester: int, name: str, bundles: list, strategy: str) -> None:
        """Reserve every bundle at once, or none: as soon as they fit (the request waits for room,
        as yr's does), or fail at once when they could not fit even in an empty job."""
        strategy = (strategy or "").upper()
        if name in self.rgroups or name in self.rg_pending:
            self.here.send(requester, Reply(req_id, f"resource group {name!r} already exists"))
            return
        if strategy not in RG_STRATEGIES:
            self.here.send(requester, Reply(req_id, f"unknown strategy {strategy!r}; valid: {RG_STRATEGIES[2:]}"))
            return
        request = PendingRg(req_id, requester, name, bundles, strategy)
        never = self._rg_never_fits(request)
        if never is not None:
            self.here.send(requester, Reply(req_id, f"cannot create resource group {name!r}: {never}"))
        elif not self._rg_reserve(request):
            self.rg_pending[name] = request  # tried again whenever capacity is given back

    def _rg_never_fits(self, request: PendingRg) -> str | None:
        """Why the bundles fit in no state of the job (every live rank empty), or None."""
        empty = Placement([cap for cap in self.here.settings["capacity"] if self.placement.is_alive(cap.rank)])
        _, problem = _rg_place(empty, request)
        return None if problem is None else f"{problem}, even with every rank of the job free"

    def _rg_reserve(self, request: PendingRg) -> bool:
        """Reserve the bundles now if they fit (and answer the requester); False if not yet."""
        placed, problem = _rg_place(self.placement, request)
        if problem is not None:
            return False
        self.rgroups[request.name] = placed
        self.last_change = self.here.clock()
        self.here.send(request.requester, Reply(request.req_id, None))
        return True

    def _retry_rgs(self) -> None:
        """Capacity came back: the waiting resource groups, oldest first, take what now fits."""
        for name, request in list(self.rg_pending.items()):
            if self._rg_reserve(request):
                del self.rg_pending[name]

    def _fail_rgs_that_never_fit(self) -> None:
        """Ranks died: a waiting resource group that no longer fits even in an empty job fails."""
        for name, request in list(self.rg_pending.items()):
            never = self._rg_never_fits(request)
            if never is not None:
                del self.rg_pending[name]
                self.here.send(request.requester, Reply(request.req_id, f"cannot create resource group {name!r}: "
                                                                         f"{never}"))

    def on_rg_remove(self, req_id: int, requester: int, name: str) -> None:
        waiting = self.rg_pending.pop(name, None)
        if waiting is not None:  # removed while it waited for room: its wait() fails
            self.here.send(waiting.requester, Reply(waiting.req_id, f"resource group {name!r} was removed "
                                                                    "before its bundles could be reserved"))
        bundles = self.rgroups.pop(name, None)
        if bundles is not None:
            for rec in [r for r in self.records.values() if r.bundle is not None and r.bundle.group == name]:
                self._end_now(rec.iid, f"its resource group {name!r} was removed")
            for b in bundles:
                b.removed = True
                if self.placement.is_alive(b.rank):
                    self.placement.release(b.rank, b.demand, group=("rg", name))
            self._retry_waiting()
        self.here.send(requester, Reply(req_id, None))

    def _rg_problem(self, rg: tuple, demand: Demand) -> str | None:
        name, index = rg
        bundles = self.rgroups.get(name)
        if bundles is None:
            return f"there is no resource group named {name!r} (yr.create_resource_group creates it)"
        if not -1 <= index < len(bundles):
            return f"bundle_index {index} is outside resource group {name!r} (it has {len(bundles)} bundles)"
        candidates = bundles if index == -1 else [bundles[index]]
        if not any(b.demand.cpu >= demand.cpu and b.demand.memory >= demand.memory
                   and all(b.demand.custom.get(k, 0) >= v for k, v in demand.custom.items() if v)
                   for b in candidates):
            return (f"cpu={demand.cpu} memory={demand.memory} is more than "
                    f"{'any bundle' if index == -1 else f'bundle {index}'} of resource group {name!r} holds")
        return None

    def _place_in_bundle(self, rec: Record) -> int | None:
        name, index = rec.spec.rg
        bundles = self.rgroups.get(name) or []
        for b in bundles if index == -1 else bundles[index:index + 1]:
            if not b.removed and b.fits(rec.demand):
                b.take(rec.demand)
                rec.bundle = b
                return b.rank
        return None

    def _release(self, rec: Record) -> None:
        """Give back what an ended instance held: to its bundle, or to placement."""
        if rec.bundle is not None:
            if not rec.bundle.removed:
                rec.bundle.take(rec.demand, +1)
            rec.bundle = None
        elif self.placement.is_alive(rec.rank):
            self.placement.release(rec.rank, rec.demand, group=rec.owner)

    def _try_place(self, rec: Record) -> bool:
        if rec.spec.rg:
            rank = self._place_in_bundle(rec)
        elif rec.spec.affinity:
            rank = self._place_with_affinity(rec)
        else:
            rank = self.placement.place(rec.demand, group=rec.owner, policy=rec.spec.policy)
        if rank is None:
            return False
        rec.rank = rank
        rec.state = "placed"
        self.last_change = self.here.clock()
        if rec.restarts:  # a recovered instance: everyone holding a handle learns its new rank
            for dest in self._live_ranks():
                self.here.send(dest, Moved(rec.iid, rank))
            return True
        self.here.send(rec.creator, Placed(rec.iid, rank, rec.iid))
        for creator, waiter_iid in rec.name_waiters:
            self.here.send(creator, Placed(waiter_iid, rank, rec.iid))
        rec.name_waiters.clear()
        return True

    def _retry_waiting(self) -> None:
        """Capacity was given back or ranks died: what waits for room tries again."""
        if self.rg_pending:
            self._retry_rgs()
        still = []
        for rec in self.waiting:
            if rec.state == "waiting" and not self._try_place(rec):
                still.append(rec)
        self.waiting = still

    def tick(self, now: float) -> None:
        """Time-driven work: expired creations, deadlock probes, forgetting old owners."""
        if self.waiting:
            self._expire(now)
        if self.waiting:
            placed = (rec.rank for rec in self.records.values() if rec.state == "placed")
            self.deadlock.check(now, min(rec.waiting_since for rec in self.waiting), placed)
        if self.ended_owners and len(self.ended_owners) > 1000:
            self.ended_owners = {k: t for k, t in self.ended_owners.items() if now - t < ENDED_MEMORY_S}

    def _expire(self, now: float) -> None:
        """Fail creations that waited longer than their schedule_timeout_ms."""
        if all(rec.deadline > now for rec in self.waiting):
            return
        for rec in [r for r in self.waiting if r.deadline <= now]:
            self.waiting.remove(rec)
            usage = self.placement.usage()["total"]
            message = (
                f"cannot create {rec.cls}: no room for cpu={rec.demand.cpu} memory={rec.demand.memory}"
                f" after waiting {rec.spec.timeout_ms / 1000:g} s (schedule_timeout_ms); "
                f"{usage['cpu_used']} of {usage['cpu_total']} millicores are in use"
            )
            self._end_record(rec, errors.ERR_RESOURCE_NOT_ENOUGH, message, fail_creation=True)

    def _fail(self, creator: int, iid: int, code: int, message: str, kind: str = "") -> None:
        self.here.send(creator, CreateFailed(iid, code, message, kind))

    # -- deadlock detection (deadlock.py decides; the scheduler knows what is held and wanted)
    def _declare_deadlock(self) -> None:
        usage = self.placement.usage()["total"]
        holders = Counter((rec.cls, rec.demand.cpu) for rec in self.records.values() if rec.state == "placed")
        wanted = Counter((rec.cls, rec.demand.cpu) for rec in self.waiting)
        held = ", ".join(f"{n} {cls} instances ({cpu} millicores each)" for (cls, cpu), n in holders.most_common())
        want = ", ".join(f"{n} {cls} ({cpu} millicores each)" for (cls, cpu), n in wanted.most_common())
        top_holder = holders.most_common(1)[0][0][0] if holders else "instance"
        message = (
            f"resource deadlock: {usage['cpu_used'] / 1000:g} of {usage['cpu_total'] / 1000:g} CPUs are held by "
            f"{held or 'no instances'}, all waiting, while creations of {want} wait for room that cannot free up; "
            f"give {top_holder} a smaller cpu= (e.g. InvokeOptions(cpu=100)) or run fewer at once"
        )
        for rec in list(self.waiting):
            self.waiting.remove(rec)
            self._end_record(rec, errors.ERR_RESOURCE_NOT_ENOUGH, message, fail_creation=True, kind="deadlock")

    # -- ending ----------------------------------------------------------------------------
    def on_ended(self, iid: int, code: int, reason: str, draining: bool) -> None:
        rec = self.records.get(iid)
        if rec is None:
            return
        if rec.restart_when_ended and rec.state == "placed" and rec.restarts < rec.spec.recover:
            # Killed to come back: its capacity is given back at once, even while an interrupted
            # call still returns (the new incarnation may need it on the same rank).
            self._release(rec)
            self._restart(rec, f"{rec.cls} instance {rec.iid:x} was killed to restart")
            self._retry_waiting()
            return
        self._end_record(rec, code, reason, draining=draining)

    def on_drained(self, iid: int) -> None:
        """A call that outlived its instance returned: the rank's capacity is free again."""
        rec = self.draining.pop(iid, None)
        if rec is not None and (rec.bundle is not None or self.placement.is_alive(rec.rank)):
            self._release(rec)
            self.last_change = self.here.clock()
            self._retry_waiting()

    def _end_now(self, iid: int, reason: str) -> None:
        """End an instance on rank 0's own account (its owner or resource group went): at once,
        no one waits for it, no restart."""
        self.on_kill(iid, reason, graceful=False, requester=0, sync=False, restart=False)

    def on_kill(self, iid: int, reason: str, graceful: bool, requester: int, sync: bool, restart: bool) -> None:
        rec = self.records.get(iid)
        if rec is None or rec.state == "ended":
            if sync:
                self.here.send(requester, Reply(iid, None))
            return
        if sync:
            rec.kill_waiters.append(requester)
        rec.restart_when_ended = restart and rec.state == "placed"
        if rec.state == "waiting":
            self.waiting.remove(rec)
            self._end_record(rec, errors.ERR_INSTANCE_EXITED, reason, fail_creation=True)
        else:
            self.here.send(rec.rank, Terminate(iid, reason, graceful))

    def _end_record(
        self, rec: Record, code: int, reason: str, fail_creation: bool = False, draining: bool = False,
        kind: str = "",
    ) -> None:
        if rec.state == "ended":
            return
        was_placed = rec.state == "placed"
        rec.state = "ended"
        if fail_creation:  # before the group hears of it: the creator must get the cause first
            self._fail(rec.creator, rec.iid, code, reason, kind)
            for creator, waiter_iid in rec.name_waiters:
                self._fail(creator, waiter_iid, code, reason, kind)
        for watcher in self.watchers:
            watcher.record_ended(rec)
        self.ended_owners[rec.iid] = self.here.clock()
        if was_placed and draining:
            self.draining[rec.iid] = rec
        elif was_placed and (rec.bundle is not None or self.placement.is_alive(rec.rank)):
            self._release(rec)
            self.last_change = self.here.clock()
        key = (rec.spec.namespace, rec.spec.name)
        if rec.spec.name and self.names.get(key) == rec.iid:
            del self.names[key]
        for requester in rec.kill_waiters:
            self.here.send(requester, Reply(rec.iid, None))
        self.here.send(rec.creator, InstanceEnded(rec.iid, code, reason))
        owner = self.records.get(rec.owner) if rec.owner is not None else None
        if owner is not None:
            owner.children.discard(rec.iid)
        for child_iid in list(rec.children):
            child = self.records.get(child_iid)
            if child is not None and not child.spec.detached:
                self._end_now(child_iid, f"its owner {rec.cls} ended ({reason})")
        del self.records[rec.iid]
        self._retry_waiting()

    def on_lookup(self, req_id: int, requester: int, name: str, namespace: str) -> None:
        rec = self.records.get(self.names.get((namespace, name), -1))
        if rec is None:
            self.here.send(requester, Reply(req_id, None))
        else:
            self.here.send(requester, Reply(req_id, (rec.iid, rec.cls, rec.rank, rec.spec.methods)))

    def on_list_names(self, req_id: int, requester: int, all_namespaces: bool) -> None:
        names = sorted(key for key, iid in self.names.items()
                       if (all_namespaces or not key[0]) and iid in self.records)
        self.here.send(requester, Reply(req_id, names))

    def on_locate(self, iid: int, requester: int) -> None:
        rec = self.records.get(iid)
        if rec is None:
            self.here.send(requester, InstanceEnded(iid, errors.ERR_INSTANCE_NOT_FOUND,
                                                    f"instance {iid:x} does not exist (ended?)"))
        elif rec.state == "placed":
            self.here.send(requester, Placed(iid, rec.rank, iid))
        else:
            rec.name_waiters.append((requester, iid))

    def on_resources(self, req_id: int, requester: int) -> None:
        usage = self.placement.usage()
        by_rank: dict[int, list[str]] = {}
        for rec in self.records.values():
            if rec.state == "placed":
                by_rank.setdefault(rec.rank, []).append(f"{rec.cls}({rec.iid:x})")
        for row in usage["ranks"]:
            row["instances"] = sorted(by_rank.get(row["rank"], []))
        usage["total"]["waiting"] = len(self.waiting)
        self.here.send(requester, Reply(req_id, usage))

    # -- process failures (ULFM) -----------------------------------------------------------
    def _live_ranks(self) -> list[int]:
        return [r for r in range(self.here.size) if r not in self.here.failed_ranks()]

    def on_ranks_failed(self, ranks: list[int]) -> None:
        """Host ranks died: their instances end (children with them) or restart elsewhere."""
        dead = set(ranks)
        for rank in dead:
            self.placement.remove_rank(rank)
        for rec in [r for r in self.draining.values() if r.rank in dead]:
            del self.draining[rec.iid]
        for rec in [r for r in self.records.values() if r.state == "placed" and r.rank in dead]:
            reason = f"{rec.cls} instance {rec.iid:x} died with rank {rec.rank} (process failure)"
            if rec.restarts < rec.spec.recover:
                self._restart(rec, reason)
                continue
            for child in list(rec.children):
                self._end_now(child, f"its owner {rec.cls} died with rank {rec.rank}")
            for dest in self._live_ranks():  # every holder of a handle fails what waits on it
                self.here.send(dest, Gone(rec.iid, errors.ERR_INSTANCE_EXITED, reason))
            self._end_record(rec, errors.ERR_INSTANCE_EXITED, reason)
        self.last_change = self.here.clock()
        if self.rg_pending:
            self._fail_rgs_that_never_fit()
        self._retry_waiting()

    def _restart(self, rec: Record, reason: str) -> None:
        """A placed instance comes back (recover_retry_times): its children end, as they would
        with their owner, and it waits for a rank again; every caller is told where it went."""
        for child in list(rec.children):
            self._end_now(child, f"its owner ended: {reason}")
        rec.restarts += 1
        rec.restart_when_ended = False
        rec.state, rec.rank, rec.waiting_since = "waiting", None, self.here.clock()
        rec.deadline = math.inf
        for watcher in self.watchers:
            watcher.member_restarted(rec)
        if not self._try_place(rec):
            self.waiting.append(rec)

    def end_all(self, reason: str) -> None:
        for rec in list(self.records.values()):
            if rec.state == "placed":
                self.here.send(rec.rank, Terminate(rec.iid, reason, False))
