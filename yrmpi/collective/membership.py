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
import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np

from ..core.errors import YRRuntimeError
from ..core.groups import CHANGED, FAILED, FAILED_CALL, MISMATCH, class_group, describe_call, observe_call_failures
from ..core.messages import (
    CollHistory,
    CollProbe,
    GroupActive,
    GroupChanged,
    GroupFail,
    GroupGo,
    GroupGrow,
    GroupJoin,
    GroupMemberFailed,
    GroupQuery,
    GroupReset,
    GroupShrink,
)
from ..core.rank import InstanceContext, Rank
from ..core.replies import Replies
from ..transport.interrupt import run_interruptible
from .epoch import Epoch, Join, RankGroup, carved_or_dead
from .errors import CollectiveError, CollectiveMismatchError, NotInGroupError, error_of_kind, fresh
from .ops import mpi
from .waiting import wait_request, wait_until

MAX_COMMS = 64  # per-signature communicators per epoch; beyond, every call is checked first
log = logging.getLogger("yrmpi")
_CALL_CODE = run_interruptible.__code__  # one frame of it per running instance call


def _call_of(frame: Any) -> Any:
    """The frame that identifies the instance call a thread runs (innermost), or None."""
    while frame is not None:
        if frame.f_code is _CALL_CODE:
            return frame
        frame = frame.f_back
    return None


def running_calls(skip: set[int]) -> set:
    """The instance calls running on this rank now, but on threads `skip`: one frame each
    (held: a frame is never reused while referenced, so a frame names one call)."""
    calls = {_call_of(frame) for tid, frame in sys._current_frames().items() if tid not in skip}
    calls.discard(None)
    return calls


def _prune(calls: set) -> None:
    """Drop (and clear, freeing their locals) the frames of calls that have returned."""
    for frame in list(calls):
        try:
            frame.clear()  # raises for a frame that still executes
        except RuntimeError:
            continue
        calls.discard(frame)


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
        self.generation = 0  # shrinks announced by the registry (rank deaths, ULFM)
        self.shrunk: dict[int, Any] = {0: self.base}  # generation -> the carving communicator (None: failed)
        self.shrunk_ready: dict[int, threading.Event] = {0: threading.Event()}
        self.shrunk_ready[0].set()
        self.elastic: set[tuple[tuple, int]] = set()  # (gid, iid): that member's failures do not fail the group
        self.reported: dict[int, Any] = {}  # iid -> instance of this rank that failed, until its notice
        installed = self
        observe_call_failures(rank, self.member_failed)

    def handlers(self) -> dict[type, Callable]:
        return {
            GroupGo: self.on_go,
            GroupShrink: self.on_shrink,
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
        observe_call_failures(self.rank, None)
        shrunk = [c for gen, c in self.shrunk.items() if gen and c is not None]
        for handle in (self.world_group, self.base, *shrunk):
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
        ec.generation = self.generation  # every member saw the same shrinks before this GroupGo
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

    def on_shrink(self, generation: int) -> None:
        """Ranks died (ULFM): shrink the carving communicator with every other live rank, in a
        helper thread (it blocks), one shrink after the other. Epochs handed out after this
        carve from the result: `Create_group` on a communicator with a dead rank fails
        (MPI_ERR_PROC_FAILED, even acknowledged and with no dead rank in the group)."""
        with self.lock:
            if generation <= self.generation:
                return
            todo = list(range(self.generation + 1, generation + 1))
            for gen in todo:
                self.shrunk_ready[gen] = threading.Event()
            self.generation = generation
        for gen in todo:
            threading.Thread(target=self._shrink, args=(gen,), name=f"yrmpi-shrink-{gen}", daemon=True).start()

    def _shrink(self, gen: int) -> None:
        self.shrunk_ready[gen - 1].wait()
        prev = self.shrunk.get(gen - 1)
        comm = None
        if prev is not None:
            try:
                start = time.monotonic()
                comm = prev.Shrink()
                log.debug("rank %d: carving communicator shrunk (#%d, %d ranks) in %.1f ms", self.rank.rank, gen,
                          comm.Get_size(), 1e3 * (time.monotonic() - start))
            except Exception as exc:
                log.warning("rank %d: shrinking the communicator of groups failed: %s", self.rank.rank, exc)
        self.shrunk[gen] = comm
        self.shrunk_ready[gen].set()

    def _create(self, ec: Epoch) -> Any:
        """The epoch's communicator over its ranks alone, from the carving communicator of the
        epoch's generation (the base, or its shrink after rank deaths)."""
        MPI = mpi()
        if ec.generation == 0:
            group = self.world_group.Incl(ec.ranks)
            try:
                return self.base.Create_group(group, ec.tag)
            finally:
                group.Free()
        self.shrunk_ready[ec.generation].wait()
        comm = self.shrunk.get(ec.generation)
        if comm is None:
            raise CollectiveError("the communicator of groups could not be shrunk after a rank death")
        mine = comm.Get_group()
        try:
            ranks = MPI.Group.Translate_ranks(self.world_group, ec.ranks, mine)
            if any(r == MPI.UNDEFINED for r in ranks):
                raise CollectiveError(f"a member's rank of {ec.name} died")
            group = mine.Incl(ranks)
            try:
                return comm.Create_group(group, ec.tag)
            finally:
                group.Free()
        finally:
            mine.Free()

    def _carve(self, ec: Epoch) -> None:
        try:
            comm = self._create(ec)
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
        if kind == FAILED:  # the members whose running call enters a collective later fail too
            failed = rg.failed
            if failed is not None:
                _prune(failed[1])
            skip: set[int] = set()  # the failed member's own next call (it may have started) is not failed
            for iid, inst in list(self.reported.items()):
                if f"instance {iid:x} " in reason:
                    skip.update(inst.threads)
                    self.reported.pop(iid, None)
            rg.failed = (error_of_kind(kind)(reason), running_calls(skip))
            for join in list(rg.joins.values()):
                join.event.set()
        for ec in stale:
            if hard:
                self._kill(ec, error_of_kind(kind)(reason))
            else:
                with ec.lock:
                    if not ec.switch_wanted and ec.dead is None:
                        ec.switch_wanted = True
                        if ec.ctl is not None:
                            self._post_switch(ec)

    def member_failed(self, inst: Any, exc: BaseException) -> None:
        """Hook from the host: a call of `inst` raised. Fail its groups fast (the registry knows
        which they are), but those it opted out of; a collective error is itself a consequence."""
        if getattr(inst, "oneshot", False) or not isinstance(exc, Exception) or isinstance(exc, CollectiveError):
            return
        keep = [gid for gid, iid in list(self.elastic) if iid == inst.iid]
        message = str(exc)
        if len(message) > 500:
            message = message[:500] + "..."
        log.debug("%s raised %s: reporting it to its groups", getattr(inst, "label", inst.iid), type(exc).__name__)
        self.reported[inst.iid] = inst
        if len(self.reported) > 1000:  # (notices that never came: groups nobody used)
            self.reported.pop(next(iter(self.reported)))
        self.rank.send(0, GroupMemberFailed(inst.iid, self.rank.rank, type(exc).__name__, message, keep))

    def set_fail_fast(self, inst: Member, gid: tuple, enabled: bool) -> None:
        if enabled:
            self.elastic.discard((gid, inst.iid))
        else:
            self.elastic.add((gid, inst.iid))

    def _failed_call(self, rg: RankGroup) -> None:
        """Raise the fail-fast error if this thread's call was running when it arrived (once)."""
        failed = rg.failed
        if failed is None:
            return
        error, calls = failed
        mine = _call_of(sys._getframe(1))
        if mine is not None and mine in calls:
            calls.discard(mine)
            raise fresh(error)
        _prune(calls)
        if not calls and rg.failed is failed:
            rg.failed = None

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
        rg = self._group(gid)
        while True:
            self._failed_call(rg)
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
                    self._failed_call(rg)
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
