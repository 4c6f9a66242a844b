"""The scheduler on rank 0: the registry of instances, their owners and their ranks.

Every creation passes through here (placement is the pure logic in placement.py); calls never
do. It frees capacity when an instance ends, ends the instances that instance owned, and
gives waiting creations the room that freed up, or a clear error when their time runs out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import errors
from .placement import Demand, Placement

if TYPE_CHECKING:
    from .runtime import Runtime


@dataclass
class Record:
    iid: int
    cls: str
    owner: int | None
    creator: int
    demand: Demand
    spec: dict
    deadline: float
    rank: int | None = None
    state: str = "waiting"  # waiting -> placed -> ended
    children: set[int] = field(default_factory=set)
    kill_waiters: list[int] = field(default_factory=list)
    name_waiters: list[tuple[int, int]] = field(default_factory=list)


class Scheduler:
    def __init__(self, rt: Runtime, placement: Placement) -> None:
        self.rt = rt
        self.placement = placement
        self.records: dict[int, Record] = {}
        self.waiting: list[Record] = []
        self.names: dict[tuple[str, str], int] = {}

    # -- creation --------------------------------------------------------------------------
    def on_create(self, iid: int, creator: int, owner: int | None, spec: dict) -> None:
        demand = Demand(spec["cpu"], spec["memory"], spec["custom"])
        problem = self.placement.explain_unplaceable(demand)
        if problem:
            self._fail(creator, iid, errors.ERR_RESOURCE_NOT_ENOUGH, f"cannot create {spec['cls']}: {problem}")
            return
        owner_rec = self.records.get(owner) if owner is not None else None
        if owner_rec is not None and owner_rec.state == "ended":
            self._fail(creator, iid, errors.ERR_INSTANCE_EXITED,
                       f"cannot create {spec['cls']}: its owner {owner_rec.cls} has ended")
            return
        if spec["name"]:
            key = (spec["namespace"], spec["name"])
            existing = self.records.get(self.names.get(key, -1))
            if existing is not None and existing.state != "ended":
                if not spec["get_if_exists"]:
                    self._fail(creator, iid, errors.ERR_PARAM_INVALID,
                               f"an instance named {spec['name']!r} already exists in namespace "
                               f"{spec['namespace']!r}; pass get_if_exists=True to share it")
                elif existing.state == "placed":
                    self.rt.send(creator, ("placed", iid, existing.rank, existing.iid))
                else:
                    existing.name_waiters.append((creator, iid))
                return
            self.names[key] = iid
        timeout = spec["timeout_ms"]
        deadline = math.inf if timeout < 0 else self.rt.clock() + timeout / 1000
        rec = Record(iid, spec["cls"], owner, creator, demand, spec, deadline)
        self.records[iid] = rec
        if owner_rec is not None:
            owner_rec.children.add(iid)
        if not self._try_place(rec):
            self.waiting.append(rec)

    def _try_place(self, rec: Record) -> bool:
        rank = self.placement.place(rec.demand, group=rec.owner, policy=rec.spec["policy"])
        if rank is None:
            return False
        rec.rank = rank
        rec.state = "placed"
        self.rt.send(rec.creator, ("placed", rec.iid, rank, rec.iid))
        for creator, waiter_iid in rec.name_waiters:
            self.rt.send(creator, ("placed", waiter_iid, rank, rec.iid))
        rec.name_waiters.clear()
        return True

    def _retry_waiting(self) -> None:
        still = []
        for rec in self.waiting:
            if rec.state == "waiting" and not self._try_place(rec):
                still.append(rec)
        self.waiting = still

    def tick(self, now: float) -> None:
        """Fail creations that waited longer than their schedule_timeout_ms."""
        if not self.waiting or all(rec.deadline > now for rec in self.waiting):
            return
        for rec in [r for r in self.waiting if r.deadline <= now]:
            self.waiting.remove(rec)
            usage = self.placement.usage()["total"]
            message = (
                f"cannot create {rec.cls}: no room for cpu={rec.demand.cpu} memory={rec.demand.memory}"
                f" after waiting {rec.spec['timeout_ms'] / 1000:g} s (schedule_timeout_ms); "
                f"{usage['cpu_used']} of {usage['cpu_total']} millicores are in use"
            )
            self._end_record(rec, errors.ERR_RESOURCE_NOT_ENOUGH, message, fail_creation=True)

    def _fail(self, creator: int, iid: int, code: int, message: str) -> None:
        self.rt.send(creator, ("create_failed", iid, code, message))

    # -- ending ----------------------------------------------------------------------------
    def on_ended(self, iid: int, code: int, reason: str) -> None:
        rec = self.records.get(iid)
        if rec is not None:
            self._end_record(rec, code, reason)

    def on_kill(self, iid: int, reason: str, graceful: bool, requester: int, sync: bool = False) -> None:
        rec = self.records.get(iid)
        if rec is None or rec.state == "ended":
            if sync:
                self.rt.send(requester, ("killed", iid))
            return
        if sync:
            rec.kill_waiters.append(requester)
        if rec.state == "waiting":
            self.waiting.remove(rec)
            self._end_record(rec, errors.ERR_INSTANCE_EXITED, reason, fail_creation=True)
        else:
            self.rt.send(rec.rank, ("terminate", iid, reason, graceful))

    def _end_record(self, rec: Record, code: int, reason: str, fail_creation: bool = False) -> None:
        if rec.state == "ended":
            return
        was_placed = rec.state == "placed"
        rec.state = "ended"
        if was_placed and self.placement.is_alive(rec.rank):
            self.placement.release(rec.rank, rec.demand, group=rec.owner)
        if fail_creation:
            self._fail(rec.creator, rec.iid, code, reason)
            for creator, waiter_iid in rec.name_waiters:
                self._fail(creator, waiter_iid, code, reason)
        key = (rec.spec["namespace"], rec.spec["name"])
        if rec.spec["name"] and self.names.get(key) == rec.iid:
            del self.names[key]
        for requester in rec.kill_waiters:
            self.rt.send(requester, ("killed", rec.iid))
        self.rt.send(rec.creator, ("instance_ended", rec.iid, code, reason))
        owner = self.records.get(rec.owner) if rec.owner is not None else None
        if owner is not None:
            owner.children.discard(rec.iid)
        for child_iid in list(rec.children):
            child = self.records.get(child_iid)
            if child is not None and not child.spec["detached"]:
                self.on_kill(child_iid, f"its owner {rec.cls} ended ({reason})", False, 0)
        del self.records[rec.iid]
        self._retry_waiting()

    def on_lookup(self, req_id: int, requester: int, name: str, namespace: str) -> None:
        rec = self.records.get(self.names.get((namespace, name), -1))
        if rec is None:
            self.rt.send(requester, ("lookup_result", req_id, None))
        else:
            self.rt.send(requester, ("lookup_result", req_id, (rec.iid, rec.cls, rec.rank, rec.spec.get("methods"))))

    def on_locate(self, iid: int, requester: int) -> None:
        rec = self.records.get(iid)
        if rec is None:
            self.rt.send(requester, ("instance_ended", iid, errors.ERR_INSTANCE_NOT_FOUND,
                                     f"instance {iid:x} does not exist (ended?)"))
        elif rec.state == "placed":
            self.rt.send(requester, ("placed", iid, rec.rank, iid))
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
        self.rt.send(requester, ("resources_result", req_id, usage))

    def end_all(self, reason: str) -> None:
        for rec in list(self.records.values()):
            if rec.state == "placed":
                self.rt.send(rec.rank, ("terminate", rec.iid, reason, False))
