"""This rank's side of communicator groups: the `Collectives` engine.

It joins epochs (asking the registry on rank 0, `GroupJoin`), carves their communicators
(`GroupGo`: in a helper thread, since `Create_group` blocks), switches members over to a new
membership together, tears epochs down (`GroupChanged`), retires members and frees what they
leave, and answers rank()/size(). One engine per process, typed against the rank it runs on
(`core.rank.Rank`); it installs itself here when built, so the public functions find it
without knowing the runtime.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np

from ..core.errors import YRRuntimeError
from ..core.groups import CHANGED, FAILED_CALL, MISMATCH, class_group, describe_call
from ..core.messages import (
    CollHistory,
    CollProbe,
    GroupActive,
    GroupChanged,
    GroupFail,
    GroupGo,
    GroupGrow,
    GroupJoin,
    GroupQuery,
    GroupReset,
)
from ..core.rank import InstanceContext, Rank
from ..core.replies import Replies
from .epoch import Epoch, Join, RankGroup, carved_or_dead
from .errors import CollectiveError, CollectiveMismatchError, NotInGroupError, error_of_kind, fresh
from .ops import mpi
from .waiting import wait_request, wait_until

MAX_COMMS = 64  # per-signature communicators per epoch; beyond, every call is checked first


class GroupRank(Rank, Protocol):
    """What the engine needs of its rank: the Rank services and the rank's one reply table."""

    replies: Replies


class Member(InstanceContext, Protocol):
    """The instance whose call runs a collective (the host's instance record)."""

    owner: int | None
    label: str
    oneshot: bool


class CreatedInstance(Protocol):
    """What this rank's caller knows of an instance it created or holds a handle to."""

    iid: int
    cls_name: str
    rank: int | None
    owned_here: bool
    ended: Any


installed: Collectives | None = None  # this process's engine: set when built, cleared by free()


def engine() -> Collectives:
    """This process's engine; every collective call before init (or after finalize) raises."""
    if installed is None:
        raise YRRuntimeError("system not initialized")
    return installed


class Collectives:
    """This rank's side of communicator subgroups.

    `instances` returns the caller's table of the instances this rank knows (read only, to tell
    the ranks of a new member's siblings that their group grows: see `created`); a function,
    since the caller is built after the engine it reports creations to."""

    def __init__(self, rank: GroupRank, comm: Any, instances: Callable[[], Mapping[int, CreatedInstance]]) -> None:
        global installed
        self.rank = rank
        self.current_instance = rank.current_instance  # bound once: the allreduce fast path asks
        self.instances = instances
        self.base = comm.Dup()  # groups are carved from a private duplicate of the world
        self.world_group = self.base.Get_group()
        self.groups: dict[tuple, RankGroup] = {}
        self.members: dict[tuple[tuple, int], Epoch] = {}  # (gid, iid) -> the epoch it uses
        self.last_epoch: dict[tuple[tuple, int], int] = {}  # (gid, iid) -> the last epoch it left
        self.lock = threading.Lock()
        self.active: set[tuple] = set()  # (owner, class) of groups whose members this rank created
        self.fast: dict[tuple, Any] = {}  # (iid, group, dtype, shape, op) -> a prepared allreduce (fast.py)
        installed = self

    def handlers(self) -> dict[type, Callable]:
        return {
            GroupGo: self.on_go,
            GroupGrow: self.on_grow,
            GroupActive: self.on_active,
            GroupFail: self.on_fail,
            GroupChanged: self.on_changed,
            CollProbe: self.on_probe,
        }

    def free(self) -> None:
        global installed
        if installed is self:
            installed = None
        for handle in (self.world_group, self.base):
            try:
                handle.Free()
            except Exception:
                pass

    def _group(self, gid: tuple) -> RankGroup:
        rg = self.groups.get(gid)
        if rg is None:
            with self.lock:
                rg = self.groups.setdefault(gid, RankGroup())
        return rg

    # -- messages from the registry -------------------------------------------------------
    def on_go(self, gid: tuple, epoch: int, version: int, tag: int, view: list) -> None:
        """Every member asked to join: carve the communicator (in a helper thread: it blocks)."""
        ec = Epoch(gid, epoch, version, tag, view, self.rank.rank)
        rg = self._group(gid)
        with self.lock:
            rg.latest = ec
            rg.version = max(rg.version, version)
            rg.live.add(ec)
            joins = [rg.joins.get(iid) for iid in ec.local]
        threading.Thread(target=self._carve, args=(ec,), name=f"yrmpi-carve-{epoch}", daemon=True).start()
        for join in joins:
            if join is not None:
                join.event.set()

    def _carve(self, ec: Epoch) -> None:
        try:
            group = self.world_group.Incl(ec.ranks)
            comm = self.base.Create_group(group, ec.tag)
            group.Free()
            ctl = comm.Dup()
        except Exception as exc:  # a rank died under ULFM, or the job is ending
            ec.failure = CollectiveError(f"carving the communicator of {ec.name} failed: {exc}")
            self.reset(ec.gid, ec.epoch, str(ec.failure))
        else:
            with ec.lock:
                ec.comm, ec.ctl = comm, ctl
                if ec.switch_wanted:
                    self._post_switch(ec)
        ec.ready.set()
        if len(ec.retired) == len(ec.local):  # torn down while carving: nobody will use it
            self._free(ec)

    def on_fail(self, gid: tuple, iid: int, message: str, kind: str) -> None:
        """The registry refused or dropped a member's join."""
        rg = self._group(gid)
        join = rg.joins.get(iid)
        if join is not None:
            join.error = error_of_kind(kind)(message)
            join.event.set()

    def on_changed(self, gid: tuple, version: int, hard: bool, reason: str, kind: str, force: bool) -> None:
        """Membership changed. Hard (a member ended, a mismatch): tear the older epochs down.
        Soft (a member added): agree with the others on the collective after which to switch.
        `force`: every live epoch, whatever its version (an addition announced by its owner)."""
        rg = self._group(gid)
        with self.lock:
            rg.version = max(rg.version, version)
            rg.query.clear()
            stale = [ec for ec in rg.live if ec.version < version or force]
        for ec in stale:
            if hard:
                self._kill(ec, error_of_kind(kind)(reason))
            else:
                with ec.lock:
                    if not ec.switch_wanted and ec.dead is None:
                        ec.switch_wanted = True
                        if ec.ctl is not None:
                            self._post_switch(ec)

    def on_active(self, gid: tuple) -> None:
        """A group whose members this rank created was carved: later creations must announce."""
        self.active.add((gid[1], gid[2]))

    def created(self, owner: int | None, label: str, iid: int) -> None:
        """Hook from Caller.create. A new sibling joins the owner's group: tell the ranks of the
        existing siblings now, before this rank sends them anything else, so that they switch
        over at the next collective the owner asks for (the registry's own notice, from rank 0,
        could arrive after the owner's next calls)."""
        if (owner, label) not in self.active:
            return
        ranks = {st.rank for st in list(self.instances().values())
                 if st.owned_here and st.cls_name == label and st.ended is None and st.rank is not None
                 and st.iid != iid}
        for rank in ranks:
            self.rank.send(rank, GroupGrow(class_group(owner, label)))

    def on_grow(self, gid: tuple) -> None:
        rg = self.groups.get(gid)
        if rg is not None:
            self.on_changed(gid, rg.version, False, "a member is being added", CHANGED, force=True)

    def _post_switch(self, ec: Epoch) -> None:
        """Contribute this rank's call count to the switch-over allreduce. Holds ec.lock."""
        MPI = mpi()
        mine = np.array([max(ec.started.values(), default=0)], dtype=np.int64)
        out = np.zeros(1, dtype=np.int64)
        try:
            ec.switch_req = ec.ctl.Iallreduce(mine, out, MPI.MAX)
            ec.switch_buf = (mine, out)
        except Exception as exc:
            ec.dead = ec.dead or CollectiveError(f"{ec.name}: switching to the new membership failed: {exc}")

    def _kill(self, ec: Epoch, error: BaseException) -> None:
        with ec.lock:
            if ec.dead is not None:
                return
            ec.dead = error
            rounds = list(ec.rounds.values())
            idle = [iid for iid in ec.local if iid not in ec.inside]
        for rnd in rounds:
            rnd.done.set()
        for iid in idle:  # members inside a collective leave when they notice
            self.retire(ec, iid)

    def on_probe(self, gid: tuple, epoch: int, probe: int) -> None:
        """The registry compares members' recent call signatures: send ours for that epoch."""
        rg = self.groups.get(gid)
        found: dict[int, tuple] = {}
        for ec in list(rg.live) if rg else ():
            if ec.epoch == epoch:
                with ec.lock:
                    found = {iid: (ec.started[iid], list(h)) for iid, h in ec.history.items()}
        self.rank.send(0, CollHistory(gid, epoch, probe, self.rank.rank, found))

    # -- waiting --------------------------------------------------------------------------
    def wait(self, done: Callable[[], bool], inst: Member | None, ec: Epoch | None = None,
             event: threading.Event | None = None, est_s: float = 0.0, stall: Epoch | None = None,
             spin: bool = True) -> None:
        """See `waiting.wait_until`."""
        wait_until(self.rank, done, inst, ec, event, est_s, stall, spin)

    def mpi_wait(self, req: Any, ec: Epoch, inst: Member | None, nbytes: int, keep: tuple) -> None:
        """See `waiting.wait_request`."""
        wait_request(self.rank, req, ec, inst, nbytes, keep)

    def request(self, key: int, msg: tuple, inst: Member | None) -> Any:
        """Send `msg` (carrying `key`) to the registry; wait, interruptibly, for its Reply."""
        slot = self.rank.replies.expect(key)
        arrived = threading.Event()
        slot.add_callback(lambda _slot: arrived.set())
        try:
            self.rank.send(0, msg)
            self.wait(slot.done, inst, event=arrived, spin=False)
            return slot.value
        finally:
            self.rank.replies.forget(key)

    # -- membership -----------------------------------------------------------------------
    def enter(self, inst: Member, gid: tuple) -> tuple[Epoch, int]:
        """The epoch this member's next collective runs in, and its sequence number there."""
        key = (gid, inst.iid)
        while True:
            ec = self.members.get(key)
            if ec is not None:
                if not ec.ready.is_set():
                    self.wait(functools.partial(carved_or_dead, ec), inst, event=ec.ready, spin=False)
                if ec.failure is not None and ec.dead is None:
                    raise fresh(ec.failure)
                with ec.lock:
                    if ec.dead is None:
                        nxt = ec.started[inst.iid] + 1
                        if not ec.switch_wanted or (ec.switch_at is not None and nxt <= ec.switch_at):
                            ec.started[inst.iid] = nxt
                            ec.inside.add(inst.iid)
                            return ec, nxt
                if ec.dead is None and ec.switch_at is None:
                    self._await_switch(ec, inst)
                    continue
                self.retire(ec, inst.iid)
            self._join(inst, gid, self.last_epoch.get(key, 0))

    def _await_switch(self, ec: Epoch, inst: Member) -> None:
        """Wait for the switch-over count (a dead epoch ends the wait too: the caller re-joins)."""
        def done() -> bool:
            with ec.lock:
                if ec.switch_at is not None or ec.dead is not None:
                    return True
                if ec.switch_req is not None and ec.switch_req.Test():
                    ec.switch_at = int(ec.switch_buf[1][0])
                    return True
            return False

        self.wait(done, inst)

    def retire(self, ec: Epoch, iid: int) -> None:
        """A local member leaves this epoch for good; the last one frees its communicators."""
        key = (ec.gid, iid)
        with ec.lock:
            if iid in ec.retired:
                return
            ec.retired.add(iid)
            finished = len(ec.retired) == len(ec.local)
        if self.members.get(key) is ec:
            del self.members[key]
        self.last_epoch[key] = max(self.last_epoch.get(key, 0), ec.epoch)
        for fkey in [k for k, f in list(self.fast.items()) if f.ec is ec and k[0] == iid]:
            self.fast.pop(fkey, None)
        if finished:
            with self.lock:
                self.groups[ec.gid].live.discard(ec)
            self._free(ec)

    @staticmethod
    def _free(ec: Epoch) -> None:
        """Free an epoch's communicators once carved and left by every local member; never if a
        request on them did not complete (MPI may still use it). Idempotent."""
        with ec.lock:
            if ec.freed or not ec.ready.is_set() or ec.abandoned:
                return
            if ec.switch_req is not None and ec.switch_at is None:
                if not ec.switch_req.Test():
                    return
                ec.switch_at = int(ec.switch_buf[1][0])
            ec.freed = True
            reqs, ec.persistent = ec.persistent, []
            comms, ec.comms = [*ec.comms.values(), ec.ctl, ec.comm], {}
        for req in reqs:
            try:
                req.Free()
            except Exception:
                pass
        for comm in comms:
            if comm is not None:
                try:
                    comm.Free()
                except Exception:
                    pass

    def _join(self, inst: Member, gid: tuple, prev_epoch: int) -> None:
        rg = self._group(gid)
        iid = inst.iid

        def found() -> Epoch | None:
            ec = rg.latest
            if ec is not None and ec.epoch > prev_epoch and iid in ec.index and ec.dead is None:
                return ec
            return None

        join = Join()
        with self.lock:
            rg.joins[iid] = join
            ec = found()
        try:
            if ec is None:
                self.rank.send(0, GroupJoin(gid, iid, self.rank.rank, prev_epoch))
                while True:
                    join.event.clear()
                    ec = found()
                    if ec is not None:
                        break
                    if join.error is not None:
                        raise fresh(join.error)
                    self.wait(join.event.is_set, inst, event=join.event, spin=False)
        finally:
            with self.lock:
                if rg.joins.get(iid) is join:
                    del rg.joins[iid]
        self.members[(gid, iid)] = ec

    def position(self, inst: Member, gid: tuple) -> tuple[int, int]:
        """(group rank, group size) of this member, without a rendezvous."""
        ec = self.members.get((gid, inst.iid))
        rg = self._group(gid)
        if ec is not None and ec.dead is None and not ec.switch_wanted and ec.version >= rg.version:
            return ec.index[inst.iid], ec.size
        cached = rg.query.get(inst.iid)
        if cached is not None and cached[0] >= rg.version:
            return cached[1], cached[2]
        key = self.rank.new_id()
        reply = self.request(key, GroupQuery(key, self.rank.rank, gid, inst.iid), inst)
        if isinstance(reply, str):
            raise NotInGroupError(reply)
        version, pos, count = reply
        with self.lock:
            rg.version = max(rg.version, version)
            rg.query[inst.iid] = reply
        return pos, count

    # -- running one collective -----------------------------------------------------------
    def reset(self, gid: tuple, epoch: int | None, reason: str) -> None:
        """Tear the group's current epoch down (its members must learn of a local failure)."""
        self.rank.send(0, GroupReset(gid, epoch, reason, MISMATCH))

    def comm_for(self, ec: Epoch, key: tuple, sigs: list[int], inst: Member, seq: int) -> Any:
        """The communicator of this call signature; the first use checks that all members agree."""
        comm = ec.comms.get(key)
        if comm is not None:
            return comm
        MPI = mpi()
        overflow = len(ec.comms) >= MAX_COMMS
        head = np.array([max(sigs), -min(sigs)], dtype=np.int64)
        out = np.zeros(2, dtype=np.int64)
        self.mpi_wait(ec.comm.Iallreduce(head, out, MPI.MAX), ec, inst, 16, (head, out))
        if out[0] != -out[1]:
            with ec.lock:
                for iid in ec.local:
                    hist = ec.history[iid]
                    if hist and hist[-1][0] == seq:
                        hist[-1] = (seq, FAILED_CALL)
            raise CollectiveMismatchError(
                f"collective #{seq} of {ec.name}: members called it with different arguments; this member "
                f"called {describe_call(key)} (every member must call the same collective with the same dtype, "
                f"shape, op and root, in the same order)")
        if overflow:
            key = ("overflow",)
            comm = ec.comms.get(key)
            if comm is not None:
                return comm
        comm, req = ec.comm.Idup()
        self.mpi_wait(req, ec, inst, 0, ())
        ec.comms[key] = comm
        return comm
