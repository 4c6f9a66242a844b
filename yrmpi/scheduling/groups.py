"""The group registry on rank 0: who is in which communicator group, epochs, tags, tear-downs.

The members' side (`yrmpi.collective`) carves communicators; this side decides when. Every
member of a group asks to join the next epoch (`GroupJoin`); once all have, the registry hands
out the epoch, a fresh `Create_group` tag and the view of (instance, rank) pairs (`GroupGo`).
A membership change bumps the group's version (`GroupChanged`): hard when a member ended (the
epoch is torn down), soft when one was added (the members switch over together). A stalled
member makes the registry compare the members' recent call signatures (`CollProbe`,
`CollHistory`) and name the first mismatch.

It depends on two things, given explicitly by the scheduler: the rank it sends from, and the
scheduler's instance records (read only: who exists, who owns whom, who created whom).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..core.groups import (
    ABSENT,
    CHANGED,
    CLASS_GROUP,
    FAILED,
    MISMATCH,
    class_group,
    describe_call,
    group_label,
    named_group,
)
from ..core.messages import (
    CollHistory,
    CollProbe,
    CollStall,
    GroupActive,
    GroupChanged,
    GroupCreate,
    GroupDestroy,
    GroupFail,
    GroupGo,
    GroupJoin,
    GroupMemberFailed,
    GroupQuery,
    GroupReset,
    GroupShrink,
    Reply,
)
from ..core.rank import Rank
from ..core.rounds import Round


class InstanceRecord(Protocol):
    """What the registry reads of the scheduler's record of one instance."""

    iid: int
    cls: str
    owner: int | None
    creator: int  # the rank that created it (and holds its owner's handle)
    state: str  # "waiting", "placed" or "ended"
    rank: int | None  # where it runs, once placed
    spec: Any  # a CreateSpec: `oneshot` instances are in no group


@dataclass
class _GroupState:
    gid: tuple
    explicit: list[int] | None = None
    version: int = 1
    epoch: int = 0
    carved_members: set[int] = field(default_factory=set)  # members of the live current epoch
    ranks: set[int] = field(default_factory=set)  # ranks of the current epoch
    watchers: set[int] = field(default_factory=set)  # ranks that asked rank()/size()
    joined: dict[int, int] = field(default_factory=dict)  # iid -> rank, waiting for the next epoch
    probe: Round | None = None  # the members' ranks asked for their call histories
    announced: bool = False  # the members' creator rank knows the group is in use


class GroupRegistry:
    """Group membership on rank 0: who is in which group, epochs, tags, tear-downs, probes."""

    def __init__(self, here: Rank, records: Mapping[int, InstanceRecord]) -> None:
        self.here = here
        self.records = records  # the scheduler's own table, kept up to date by it
        self.groups: dict[tuple, _GroupState] = {}
        self.siblings: dict[tuple, list[int]] = {}  # (owner, cls) -> live iids, creation order
        self.named_of: dict[int, set[tuple]] = {}  # iid -> explicit groups it is in
        self._tags = itertools.count(1)
        self._versions = itertools.count(2)  # one counter for all groups: a group that is dropped
        self._epochs = itertools.count(1)  # and made again never reuses a version or an epoch
        self.generation = 0  # shrinks of the carving communicator announced (after rank deaths)
        self._shrunk_for = 0  # how many dead ranks the last shrink was for

    def handlers(self) -> dict[type, Callable]:
        return {
            GroupJoin: self.on_join,
            GroupQuery: self.on_query,
            GroupCreate: self.on_create,
            GroupDestroy: self.on_destroy,
            GroupReset: self.on_reset,
            CollStall: self.on_stall,
            CollHistory: self.on_history,
            GroupMemberFailed: self.on_member_failed,
        }

    # -- hooks from the scheduler ---------------------------------------------------------
    def record_added(self, rec: InstanceRecord) -> None:
        if rec.spec.oneshot:
            return
        self.siblings.setdefault((rec.owner, rec.cls), []).append(rec.iid)
        g = self.groups.get(class_group(rec.owner, rec.cls))
        if g is not None:
            self._changed(g, False, f"{rec.cls} instance {rec.iid:x} was added to the group", CHANGED)

    def record_ended(self, rec: InstanceRecord) -> None:
        """A record ended: drop it from its groups, tear down groups it owned."""
        sibs = self.siblings.get((rec.owner, rec.cls))
        if sibs is not None and rec.iid in sibs:
            sibs.remove(rec.iid)
            if not sibs:
                del self.siblings[(rec.owner, rec.cls)]
            g = self.groups.get(class_group(rec.owner, rec.cls))
            if g is not None:
                self._changed(g, True, f"member {rec.cls} instance {rec.iid:x} ended", CHANGED)
                if not sibs:
                    del self.groups[g.gid]
        for gid in self.named_of.pop(rec.iid, ()):
            g = self.groups.get(gid)
            if g is not None:
                self._changed(g, True, f"member {rec.cls} instance {rec.iid:x} ended", CHANGED)
        for gid in [gid for gid in self.groups if gid[1] == rec.iid]:
            self._drop(self.groups[gid], f"its owner {rec.cls} instance {rec.iid:x} ended")

    def member_restarted(self, rec: InstanceRecord) -> None:
        """A restart that keeps the instance id (and its place): the old incarnation's epochs end."""
        gids = [class_group(rec.owner, rec.cls), *self.named_of.get(rec.iid, ())]
        for gid in gids:
            g = self.groups.get(gid)
            if g is not None:
                self._changed(g, True, f"member {rec.cls} instance {rec.iid:x} restarted", CHANGED)

    # -- helpers --------------------------------------------------------------------------
    def _owner_alive(self, owner: int | None) -> bool:
        rec = self.records.get(owner) if owner is not None else None
        return owner is None or (rec is not None and rec.state != "ended")

    def _get(self, gid: tuple) -> _GroupState | None:
        g = self.groups.get(gid)
        if g is None and gid[0] == CLASS_GROUP and self._owner_alive(gid[1]):
            g = self.groups[gid] = _GroupState(gid, version=next(self._versions))
        return g

    def _members(self, g: _GroupState) -> list[int]:
        if g.explicit is not None:
            records = self.records
            return [i for i in g.explicit if i in records and records[i].state != "ended"]
        return self.siblings.get((g.gid[1], g.gid[2]), [])

    def _absent(self, gid: tuple) -> str:
        if not self._owner_alive(gid[1]):
            return f"{group_label(gid)} is gone: its owner has ended"
        return (f"no group named {gid[2]!r} was created by this instance's owner "
                f"(yr.collective.create_group(handles, name=...))")

    def _changed(self, g: _GroupState, hard: bool, reason: str, kind: str, also: set[int] | None = None) -> None:
        g.version = next(self._versions)
        targets = g.ranks | g.watchers | set(g.joined.values()) | (also or set())
        for rank in targets:
            self.here.send(rank, GroupChanged(g.gid, g.version, hard, reason, kind, False))
        if hard:
            g.carved_members = set()
            g.probe = None
            for iid, rank in g.joined.items():
                text = reason if kind == FAILED else f"{group_label(g.gid)} changed: {reason}"
                self.here.send(rank, GroupFail(g.gid, iid, text, kind))
            g.joined = {}
        else:
            self._try_go(g)

    def _drop(self, g: _GroupState, reason: str) -> None:
        self._changed(g, True, reason, CHANGED)
        self.groups.pop(g.gid, None)
        for iid in g.explicit or ():
            named = self.named_of.get(iid)
            if named is not None:
                named.discard(g.gid)

    def _try_go(self, g: _GroupState) -> None:
        members = self._members(g)
        if not members or any(m not in g.joined for m in members):
            return
        self._shrink_if_ranks_died()
        g.epoch = next(self._epochs)
        tag = next(self._tags) % 32767 + 1  # a distinct tag per carving (MPI guarantees >= 32767)
        view = [(m, g.joined[m]) for m in members]
        g.ranks = {r for _, r in view}
        g.carved_members = set(members)
        g.joined = {}
        g.probe = None
        for rank in g.ranks:
            self.here.send(rank, GroupGo(g.gid, g.epoch, g.version, tag, view))
        if g.explicit is None and not g.announced:
            g.announced = True
            records = self.records
            for rank in {records[m].creator for m in members if m in records}:
                self.here.send(rank, GroupActive(g.gid))

    def _shrink_if_ranks_died(self) -> None:
        """Under ULFM, after a rank death, carving from the old communicator fails: before the
        next epoch is handed out, every live rank shrinks it (each receives this before the
        GroupGo that follows, in order, from this rank)."""
        failed = self.here.failed_ranks()
        if len(failed) <= self._shrunk_for:
            return
        self._shrunk_for = len(failed)
        self.generation += 1
        for rank in range(self.here.size):
            if rank not in failed:
                self.here.send(rank, GroupShrink(self.generation))

    # -- messages -------------------------------------------------------------------------
    def on_join(self, gid: tuple, iid: int, rank: int, prev_epoch: int) -> None:
        g = self._get(gid)
        if g is None:
            self.here.send(rank, GroupFail(gid, iid, self._absent(gid), ABSENT))
            return
        if iid not in self._members(g):
            rec = self.records.get(iid)
            what = f"{rec.cls} instance {iid:x}" if rec is not None else f"instance {iid:x}"
            self.here.send(rank, GroupFail(gid, iid, f"{what} is not a member of {group_label(gid)}", ABSENT))
            return
        if iid in g.carved_members and prev_epoch < g.epoch:
            return  # the current epoch already includes it: its GroupGo is on the way or arrived
        g.joined[iid] = rank
        self._try_go(g)

    def on_query(self, key: int, requester: int, gid: tuple, iid: int) -> None:
        """A member's rank()/size(): Reply (version, position, size), or why it is not a member."""
        g = self._get(gid)
        members = self._members(g) if g is not None else []
        if g is None or iid not in members:
            reply: Any = self._absent(gid) if g is None else f"instance {iid:x} is not a member of {group_label(gid)}"
        else:
            g.watchers.add(requester)
            reply = (g.version, members.index(iid), len(members))
        self.here.send(requester, Reply(key, reply))

    def on_create(self, key: int, requester: int, owner: int | None, name: str, iids: list[int]) -> None:
        """create_group: Reply None, or what is wrong with the request."""
        gid = named_group(owner, name)
        problem = None
        if gid in self.groups:
            problem = f"a group named {name!r} already exists; destroy_group({name!r}) first or pick another name"
        for iid in iids:
            rec = self.records.get(iid)
            if problem is None and (rec is None or rec.state == "ended"):
                problem = f"create_group({name!r}): instance {iid:x} does not exist (ended?)"
            elif problem is None and rec.owner != owner:
                problem = (f"create_group({name!r}): {rec.cls} instance {iid:x} was not created by the caller; "
                           f"a group is made by the owner of its members")
        if problem is None:
            self.groups[gid] = _GroupState(gid, explicit=list(iids), version=next(self._versions))
            for iid in iids:
                self.named_of.setdefault(iid, set()).add(gid)
        self.here.send(requester, Reply(key, problem))

    def on_destroy(self, key: int, requester: int, owner: int | None, name: str) -> None:
        """destroy_group: Reply None, or why not."""
        g = self.groups.get(named_group(owner, name))
        if g is None:
            self.here.send(requester, Reply(key, f"destroy_group: no group named {name!r}"))
            return
        self._drop(g, f"group {name!r} was destroyed")
        self.here.send(requester, Reply(key, None))

    def on_reset(self, gid: tuple, epoch: int | None, reason: str, kind: str) -> None:
        g = self.groups.get(gid)
        if g is None:
            return
        if epoch is not None and (epoch != g.epoch or not g.carved_members):
            return  # that epoch is already gone
        self._changed(g, True, reason, kind)

    def on_member_failed(self, iid: int, rank: int, error_class: str, message: str, keep: list) -> None:
        """A member's call raised: fail its groups fast. Members inside a collective of the epoch,
        or waiting to join the next, are released with GroupFailedError; every member's rank is
        told, so that members whose running call enters a collective later fail too."""
        rec = self.records.get(iid)
        if rec is None or rec.state == "ended":
            return
        kept = {tuple(k) for k in keep}
        for gid in [class_group(rec.owner, rec.cls), *self.named_of.get(iid, ())]:
            g = self.groups.get(gid)
            if g is None or gid in kept:
                continue
            records = self.records
            ranks = {records[m].rank for m in self._members(g) if m != iid and records[m].rank is not None}
            reason = (f"{group_label(gid)} failed: member {rec.cls} instance {iid:x} on rank {rank} raised "
                      f"{error_class}: {message}")
            self._changed(g, True, reason, FAILED, ranks)

    def on_stall(self, gid: tuple, epoch: int) -> None:
        """A member waits long in a collective: compare the members' recent call signatures."""
        g = self.groups.get(gid)
        if g is None or epoch != g.epoch or not g.carved_members or g.probe is not None:
            return
        g.probe = Round(self.here, g.ranks, lambda probe: CollProbe(gid, epoch, probe))

    def on_history(self, gid: tuple, epoch: int, probe: int, rank: int, found: dict) -> None:
        g = self.groups.get(gid)
        if g is None or g.probe is None or g.probe.round_id != probe or not g.probe.answer(rank, found):
            return
        histories = {iid: h for answer in g.probe.answers.values() for iid, h in answer.items()}
        g.probe = None
        problem = first_mismatch(histories, [m for m in self._members(g) if m in histories])
        if problem is not None:
            self._changed(g, True, f"{group_label(gid)}: {problem}", MISMATCH)


def first_mismatch(histories: dict[int, tuple], order: list[int]) -> str | None:
    """The earliest collective that two members called differently, described; None if none.
    `histories`: iid -> (calls started, [(sequence number, call key), ...])."""
    by_seq: dict[int, list[tuple[int, tuple]]] = {}
    for pos, iid in enumerate(order):
        for seq, key in histories[iid][1]:
            by_seq.setdefault(seq, []).append((pos, key))
    for seq in sorted(by_seq):
        calls = by_seq[seq]
        for pos, key in calls[1:]:
            if key != calls[0][1]:
                return (f"collective #{seq}: member {calls[0][0]} called {describe_call(calls[0][1])} but member "
                        f"{pos} called {describe_call(key)}")
    return None
