"""Communicator subgroups: collectives among the instances that one owner created.

The instances of one class created by one owner (a supervisor instance, or the driver) form that
owner's group for that class; `create_group` makes explicit groups. Inside an instance method,
`allreduce`, `broadcast`, `allgather`, `reduce_scatter` and `barrier` run over an MPI communicator
carved from the world with `Create_group` over the members' ranks alone. See docs/collectives.md.

How it stays correct and interruptible (the parts that are easy to get wrong):
- Carving is a rendezvous through the scheduler on rank 0 ("group_join" -> "group_go"): a blocking
  `Create_group` starts only once every member has asked for the same epoch, and it runs in a
  helper thread, so member threads only ever wait on nonblocking requests or events.
- Every epoch (membership version) gets its own communicator and tag; a member of an old epoch
  cannot match a collective of a new one. An added member switches the old members over at the
  same collective on all of them (one MAX allreduce of their call counts on a control
  communicator); the owner's rank announces the addition to the siblings' ranks itself
  (`Collectives.created`, called from Caller.create), because its next calls to them could
  overtake the scheduler's notice. A member that ends, or a mismatch, tears the epoch down:
  members blocked in it get an error, and the next call re-carves.
- Each distinct call signature (kind, dtype, shape, op) gets its own duplicate communicator the
  first time it is used (after checking all members agree), so members that disagree can never
  match each other's buffers; they stall instead, and the scheduler, asked by a stalled member,
  compares the members' recent call signatures and tears the epoch down with a clear message.
- Several members on one rank combine locally first; only one thread per rank talks MPI.
- Waiting spins briefly on `Test`, then sleeps with backoff, polls the runtime's wire (so that
  tear-down messages arrive even when every serve thread is busy) and checks a cancel flag.
- The steady state of a training loop (`_Fast`: one member per rank, same signature, same
  buffers) skips all of the above but the bookkeeping, and uses a persistent MPI collective.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import operator
import os
import pickle
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import runtime as _rt
from ..core.errors import InstanceExitedError, YRRuntimeError, YRTypeError, YRValueError
from ..transport.interrupt import Shield

if TYPE_CHECKING:
    from ..runtime import Runtime
    from ..scheduling.scheduler import Record, Scheduler

__all__ = [
    "CollectiveError", "CollectiveMismatchError", "GroupChangedError", "NotInGroupError", "OPS",
    "allgather", "allreduce", "barrier", "broadcast", "comm", "create_group", "destroy_group", "rank",
    "reduce_scatter", "size",
]

OPS = ("sum", "mean", "max", "min", "prod")

# Waiting. Nonblocking collectives advance only inside Test (libnbc, MPICH), so first spin on
# Test for about as long as the transfer should take: SPIN_S, or twice the time its size
# suggests, at most SPIN_MAX_S (sched_yield between tests measured slower, even with more ranks
# than cores). Then sleep FAST_SLEEP_S between tests while it may still be in flight, then back
# off to SLEEP_MAX_S: a member waiting for a peer that is still computing must not hold a core.
SPIN_TESTS = 64  # a first burst of Tests without reading the clock (small messages finish here)
SPIN_S = 300e-6
SPIN_MAX_S = 0.005
SPIN_YIELD = False
BANDWIDTH = 1.5e9  # bytes/s, for the expected duration of a transfer (a rough, low figure)
FAST_SLEEP_S = 50e-6
FAST_S = 0.01
SLEEP_MAX_S = 0.002
WIRE_S = 0.002  # how often a waiting member polls the runtime's wire itself
STALL_S = 0.25  # a collective waiting this long asks the scheduler to compare call signatures
STALL_MAX_S = 4.0
MAX_COMMS = 64  # per-signature communicators per epoch; beyond, every call is checked first
HISTORY = 64  # call signatures kept per member for mismatch diagnosis
HEADER_BYTES = 256  # broadcast header (dtype and shape, or object size)


# -- errors -----------------------------------------------------------------------------------
class CollectiveError(YRRuntimeError):
    """A collective could not complete (base class of the errors below)."""


class NotInGroupError(CollectiveError):
    """The caller is not a member of the group it named (or of any group: the driver, a task)."""


class GroupChangedError(CollectiveError):
    """The group was torn down or its membership changed while this member waited in it."""


class CollectiveMismatchError(CollectiveError, ValueError):
    """Members called different collectives, or with different shapes, dtypes, ops or roots."""


_KILL_CLASSES = {"changed": GroupChangedError, "mismatch": CollectiveMismatchError}


def _fresh(err: BaseException) -> BaseException:
    """A new exception like `err`, so each thread that raises it gets its own traceback."""
    try:
        return type(err)(*err.args)
    except Exception:
        return err


# -- signatures -------------------------------------------------------------------------------
_sigs: dict[tuple, int] = {}


def _sig(key: tuple) -> int:
    """A 62-bit signature of a call key, equal in every process (unlike hash())."""
    sig = _sigs.get(key)
    if sig is None:
        digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
        sig = _sigs[key] = int.from_bytes(digest, "little") >> 2
    return sig


def _describe(key: tuple) -> str:
    kind = key[0]
    if kind == "failed":
        return "a call that failed"
    if len(key) >= 3 and isinstance(key[1], np.dtype):
        shape = "x".join(str(d) for d in key[2]) or "scalar"
        text = f"{kind}({key[1]}[{shape}]"
        return text + (f", op={key[3]!r})" if len(key) > 3 else ")")
    if kind == "broadcast":
        return f"broadcast(root={key[1]})"
    if len(key) > 2:
        return f"{kind}(object, op={key[2]!r})"
    if len(key) > 1:
        return f"{kind}(object)"
    return f"{kind}()"


# -- MPI helpers ------------------------------------------------------------------------------
_mpi_ops: dict[tuple[str, str], Any] = {}
_ufuncs = {"sum": np.add, "mean": np.add, "prod": np.multiply, "max": np.maximum, "min": np.minimum}
_pyops = {"sum": operator.add, "mean": operator.add, "prod": operator.mul, "max": max, "min": min}


_mpi_module: Any = None


def _MPI() -> Any:
    global _mpi_module
    if _mpi_module is None:
        from mpi4py import MPI

        _mpi_module = MPI
    return _mpi_module


def _mpi_op(op: str, dtype: np.dtype) -> Any:
    """The MPI op for a yr op on this dtype; bool max/min are the logical or/and."""
    found = _mpi_ops.get((op, dtype.kind))
    if found is None:
        MPI = _MPI()
        if dtype.kind == "b":
            table = {"max": MPI.LOR, "min": MPI.LAND}
        else:
            table = {"sum": MPI.SUM, "mean": MPI.SUM, "prod": MPI.PROD, "max": MPI.MAX, "min": MPI.MIN}
        found = _mpi_ops[(op, dtype.kind)] = table.get(op)
    return found


def _mpi_type(dtype: np.dtype) -> Any:
    MPI = _MPI()
    found = MPI._typedict.get(dtype.char)
    if found is None:
        from mpi4py.util import dtlib

        found = MPI._typedict[dtype.char] = dtlib.from_numpy_dtype(dtype)
    return found


_problems: dict[tuple, str | None] = {}


def _array_problem(x: np.ndarray, op: str | None) -> str | None:
    """Why this array cannot take part in a collective with this op (None: it can)."""
    if op is not None and not isinstance(op, str):
        return f"op must be one of {', '.join(OPS)}; got {op!r}"
    key = (x.dtype, op)
    try:
        return _problems[key]
    except KeyError:
        problem = _problems[key] = _dtype_problem(x.dtype, op)
        return problem


def _dtype_problem(dt: np.dtype, op: str | None) -> str | None:
    if dt.hasobject or dt.fields is not None or dt.kind not in "biufc":
        return f"dtype {dt} has no MPI equivalent; use a numeric dtype"
    if not dt.isnative:
        return f"dtype {dt} is not in native byte order; convert with x.astype(x.dtype.newbyteorder('='))"
    if op is not None:
        if op not in OPS:
            return f"op must be one of {', '.join(OPS)}; got {op!r}"
        if dt.kind == "b" and op not in ("max", "min"):
            return f"op={op!r} is not defined on bool arrays; use 'max' (or) or 'min' (and)"
        if dt.kind == "c" and op in ("max", "min"):
            return f"op={op!r} is not defined on complex arrays"
        if op == "mean" and dt.kind not in "fc":
            return f"op='mean' needs a floating dtype, got {dt}; use op='sum' and divide, or cast"
    return None


# -- rank-side state --------------------------------------------------------------------------
@dataclass
class _Round:
    """One collective call of the members that share this rank: they combine here first."""

    n: int
    items: dict[int, tuple] = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)
    results: list | None = None
    error: BaseException | None = None


class _Epoch:
    """One carving of a group, as seen from one rank."""

    def __init__(self, gid: tuple, epoch: int, version: int, tag: int, view: Sequence[tuple[int, int]],
                 my_rank: int) -> None:
        self.gid, self.epoch, self.version, self.tag = gid, epoch, version, tag
        self.members = [iid for iid, _ in view]
        self.index = {iid: i for i, iid in enumerate(self.members)}
        self.member_rank = [r for _, r in view]
        self.ranks = list(dict.fromkeys(self.member_rank))  # comm rank order: first appearance
        self.counts = [self.member_rank.count(r) for r in self.ranks]
        self.local = [iid for iid, r in view if r == my_rank]
        self.local_index = {iid: i for i, iid in enumerate(self.local)}
        order = [g for r in self.ranks for g, mr in enumerate(self.member_rank) if mr == r]
        self.gather_index = np.argsort(order)  # rank-major position -> group order
        self.identity_order = order == sorted(order)
        self.simple = all(c == 1 for c in self.counts)  # one member per rank: comm rank == group rank
        self.size = len(self.members)
        self.nranks = len(self.ranks)
        self.comm: Any = None  # carved: validation and per-signature Idup happen here
        self.ctl: Any = None  # control: the one switch-over allreduce of this epoch
        self.ready = threading.Event()
        self.failure: BaseException | None = None
        self.dead: BaseException | None = None
        self.lock = threading.Lock()
        self.comms: dict[Hashable, Any] = {}
        self.rounds: dict[int, _Round] = {}
        self.started = {iid: 0 for iid in self.local}
        self.history = {iid: deque(maxlen=HISTORY) for iid in self.local}
        self.switch_wanted = False
        self.switch_req: Any = None
        self.switch_buf: tuple | None = None
        self.switch_at: int | None = None
        self.inside: set[int] = set()  # local members inside a collective call right now
        self.retired: set[int] = set()  # local members that left this epoch for good
        self.freed = False
        self.abandoned: list = []  # buffers of requests that never completed: keep them alive
        self.persistent: list = []  # inactive persistent requests on this epoch's communicators

    @property
    def name(self) -> str:
        return _group_label(self.gid)


def _carved_or_dead(ec: _Epoch) -> bool:
    return ec.ready.is_set() or ec.dead is not None


def _group_label(gid: tuple) -> str:
    kind, owner, name = gid
    by = "the driver" if owner is None else f"instance {owner:x}"
    return f"group {name!r} of {by}" if kind == "named" else f"the {name} group of {by}"


@dataclass
class _Join:
    event: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class _RankGroup:
    """What this rank knows of one group: its latest epoch and the membership version."""

    def __init__(self) -> None:
        self.latest: _Epoch | None = None
        self.version = 0
        self.live: set[_Epoch] = set()
        self.joins: dict[int, _Join] = {}
        self.query: dict[int, tuple[int, int, int]] = {}  # iid -> (version, rank, size)


class Collectives:
    """This rank's side of communicator subgroups; also holds the scheduler's registry on rank 0."""

    def __init__(self, rt: Runtime, comm: Any) -> None:
        self.rt = rt
        self.base = comm.Dup()  # groups are carved from a private duplicate of the world
        self.world_group = self.base.Get_group()
        self.groups: dict[tuple, _RankGroup] = {}
        self.members: dict[tuple[tuple, int], _Epoch] = {}  # (gid, iid) -> the epoch it uses
        self.last_epoch: dict[tuple[tuple, int], int] = {}  # (gid, iid) -> the last epoch it left
        self.lock = threading.Lock()
        self.active: set[tuple] = set()  # (owner, class) of groups whose members this rank created
        self.fast: dict[tuple, _Fast] = {}  # (iid, group, dtype, shape, op) -> a prepared allreduce
        self._replies: dict[int, list] = {}

    def handlers(self) -> dict[str, Callable]:
        table = {
            "group_go": self.on_go,
            "group_grow": self.on_grow,
            "group_active": self.on_active,
            "group_fail": self.on_fail,
            "group_changed": self.on_changed,
            "group_reply": self.on_reply,
            "coll_probe": self.on_probe,
        }
        sched = self.rt.scheduler
        if sched is not None:
            reg: GroupRegistry = sched.groups
            table.update(group_join=reg.on_join, group_query=reg.on_query, group_create=reg.on_create,
                         group_destroy=reg.on_destroy, group_reset=reg.on_reset, coll_stall=reg.on_stall,
                         coll_history=reg.on_history)
        return table

    def free(self) -> None:
        for handle in (self.world_group, self.base):
            try:
                handle.Free()
            except Exception:
                pass

    def _group(self, gid: tuple) -> _RankGroup:
        rg = self.groups.get(gid)
        if rg is None:
            with self.lock:
                rg = self.groups.setdefault(gid, _RankGroup())
        return rg

    # -- messages from the scheduler ------------------------------------------------------
    def on_go(self, gid: tuple, epoch: int, version: int, tag: int, view: list) -> None:
        """Every member asked to join: carve the communicator (in a helper thread: it blocks)."""
        ec = _Epoch(gid, epoch, version, tag, view, self.rt.rank)
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

    def _carve(self, ec: _Epoch) -> None:
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
        """The scheduler refused or dropped a member's join."""
        rg = self._group(gid)
        join = rg.joins.get(iid)
        if join is not None:
            join.error = (NotInGroupError if kind == "absent" else _KILL_CLASSES.get(kind, GroupChangedError))(message)
            join.event.set()

    def on_changed(self, gid: tuple, version: int, hard: bool, reason: str, kind: str, force: bool = False) -> None:
        """Membership changed. Hard (a member ended, a mismatch): tear the older epochs down.
        Soft (a member added): agree with the others on the collective after which to switch."""
        rg = self._group(gid)
        with self.lock:
            rg.version = max(rg.version, version)
            rg.query.clear()
            stale = [ec for ec in rg.live if ec.version < version or force]
        for ec in stale:
            if hard:
                self._kill(ec, _KILL_CLASSES.get(kind, GroupChangedError)(reason))
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
        over at the next collective the owner asks for (the scheduler's own notice, from rank 0,
        could arrive after the owner's next calls)."""
        if (owner, label) not in self.active:
            return
        ranks = {st.rank for st in list(self.rt.caller.instances.values())
                 if st.owned_here and st.cls_name == label and st.ended is None and st.rank is not None
                 and st.iid != iid}
        for rank in ranks:
            self.rt.send(rank, ("group_grow", ("cls", owner, label)))

    def on_grow(self, gid: tuple) -> None:
        rg = self.groups.get(gid)
        if rg is not None:
            self.on_changed(gid, rg.version, False, "a member is being added", "changed", force=True)

    def _post_switch(self, ec: _Epoch) -> None:
        """Contribute this rank's call count to the switch-over allreduce. Holds ec.lock."""
        MPI = _MPI()
        mine = np.array([max(ec.started.values(), default=0)], dtype=np.int64)
        out = np.zeros(1, dtype=np.int64)
        try:
            ec.switch_req = ec.ctl.Iallreduce(mine, out, MPI.MAX)
            ec.switch_buf = (mine, out)
        except Exception as exc:
            ec.dead = ec.dead or CollectiveError(f"{ec.name}: switching to the new membership failed: {exc}")

    def _kill(self, ec: _Epoch, error: BaseException) -> None:
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

    def on_reply(self, key: int, payload: Any) -> None:
        slot = self._replies.get(key)
        if slot is not None:
            slot.append(payload)
            slot[0].set()

    def on_probe(self, gid: tuple, epoch: int, probe: int) -> None:
        """The scheduler compares members' recent call signatures: send ours for that epoch."""
        rg = self.groups.get(gid)
        found: dict[int, tuple] = {}
        for ec in list(rg.live) if rg else ():
            if ec.epoch == epoch:
                with ec.lock:
                    found = {iid: (ec.started[iid], list(h)) for iid, h in ec.history.items()}
        self.rt.send(0, ("coll_history", gid, epoch, probe, self.rt.rank, found))

    # -- waiting --------------------------------------------------------------------------
    def poll_wire(self) -> None:
        """Let the runtime receive messages while this thread waits (the serve threads may all be
        busy in collectives). Work found here goes to another serve thread (Progress.submit)."""
        self.rt.progress.poll()

    def wait(self, done: Callable[[], bool], inst: Any, ec: _Epoch | None = None,
             event: threading.Event | None = None, est_s: float = 0.0, stall: _Epoch | None = None,
             spin: bool = True) -> None:
        """Wait until done(); raise if the epoch is torn down or this instance ends meanwhile.
        With `stall`, a long wait asks the scheduler to compare that epoch's call signatures."""
        if done():
            return
        now = time.monotonic()
        if spin and event is None:
            end = now + min(max(SPIN_S, 2 * est_s), SPIN_MAX_S)
            while time.monotonic() < end:
                for _ in range(8):
                    if done():
                        return
                if SPIN_YIELD:
                    os.sched_yield()
        sleep = FAST_SLEEP_S
        fast_until = now + FAST_S + 4 * est_s
        next_wire = now + WIRE_S
        stall_every = max(STALL_S, 4 * est_s)
        next_stall = now + stall_every if stall is not None else float("inf")
        while True:
            if ec is not None and ec.dead is not None:
                raise _fresh(ec.dead)
            if inst is not None and inst.ended is not None:
                check = getattr(self.rt, "check_interrupt", None)
                if check is not None:
                    check()  # the runtime's own way to end a call of an ended instance
                raise InstanceExitedError(f"{inst.label} ended while waiting in a collective")
            if event is not None:
                event.wait(sleep)
            else:
                time.sleep(sleep)
            if done():
                return
            now = time.monotonic()
            if now >= fast_until:
                sleep = min(sleep * 2, SLEEP_MAX_S)
            if now >= next_wire:
                self.poll_wire()
                next_wire = now + WIRE_S
            if now >= next_stall:
                self.rt.send(0, ("coll_stall", stall.gid, stall.epoch))
                stall_every = min(stall_every * 2, STALL_MAX_S)
                next_stall = now + stall_every

    def request(self, msg_head: str, *args: Any, inst: Any = None) -> Any:
        """Ask the scheduler; wait (interruptibly) for its answer."""
        key = self.rt.new_id()
        slot: list = [threading.Event()]
        self._replies[key] = slot
        try:
            self.rt.send(0, (msg_head, key, self.rt.rank, *args))
            self.wait(lambda: len(slot) > 1, inst, event=slot[0], spin=False)
            return slot[1]
        finally:
            self._replies.pop(key, None)

    # -- membership -----------------------------------------------------------------------
    def enter(self, inst: Any, gid: tuple) -> tuple[_Epoch, int]:
        """The epoch this member's next collective runs in, and its sequence number there."""
        key = (gid, inst.iid)
        while True:
            ec = self.members.get(key)
            if ec is not None:
                if not ec.ready.is_set():
                    self.wait(functools.partial(_carved_or_dead, ec), inst, event=ec.ready, spin=False)
                if ec.failure is not None and ec.dead is None:
                    raise _fresh(ec.failure)
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

    def _await_switch(self, ec: _Epoch, inst: Any) -> None:
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

    def retire(self, ec: _Epoch, iid: int) -> None:
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
    def _free(ec: _Epoch) -> None:
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

    def _join(self, inst: Any, gid: tuple, prev_epoch: int) -> None:
        rg = self._group(gid)
        iid = inst.iid

        def found() -> _Epoch | None:
            ec = rg.latest
            if ec is not None and ec.epoch > prev_epoch and iid in ec.index and ec.dead is None:
                return ec
            return None

        join = _Join()
        with self.lock:
            rg.joins[iid] = join
            ec = found()
        try:
            if ec is None:
                self.rt.send(0, ("group_join", gid, iid, self.rt.rank, prev_epoch))
                while True:
                    join.event.clear()
                    ec = found()
                    if ec is not None:
                        break
                    if join.error is not None:
                        raise _fresh(join.error)
                    self.wait(join.event.is_set, inst, event=join.event, spin=False)
        finally:
            with self.lock:
                if rg.joins.get(iid) is join:
                    del rg.joins[iid]
        self.members[(gid, iid)] = ec

    def position(self, inst: Any, gid: tuple) -> tuple[int, int]:
        """(group rank, group size) of this member, without a rendezvous."""
        ec = self.members.get((gid, inst.iid))
        rg = self._group(gid)
        if ec is not None and ec.dead is None and not ec.switch_wanted and ec.version >= rg.version:
            return ec.index[inst.iid], ec.size
        cached = rg.query.get(inst.iid)
        if cached is not None and cached[0] >= rg.version:
            return cached[1], cached[2]
        reply = self.request("group_query", gid, inst.iid, inst=inst)
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
        self.rt.send(0, ("group_reset", gid, epoch, reason, "mismatch"))

    def mpi_wait(self, req: Any, ec: _Epoch, inst: Any, nbytes: int, keep: tuple) -> None:
        """Wait for a nonblocking MPI request; on interruption keep its buffers alive forever
        (MPI may still touch them)."""
        test = req.Test
        for _ in range(SPIN_TESTS):
            if test():
                return
        try:
            self.wait(test, inst, ec, est_s=nbytes / BANDWIDTH, stall=ec)
        except BaseException:
            ec.abandoned.append((req, keep))
            raise

    def comm_for(self, ec: _Epoch, key: tuple, sigs: list[int], inst: Any, seq: int) -> Any:
        """The communicator of this call signature; the first use checks that all members agree."""
        comm = ec.comms.get(key)
        if comm is not None:
            return comm
        MPI = _MPI()
        overflow = len(ec.comms) >= MAX_COMMS
        head = np.array([max(sigs), -min(sigs)], dtype=np.int64)
        out = np.zeros(2, dtype=np.int64)
        self.mpi_wait(ec.comm.Iallreduce(head, out, MPI.MAX), ec, inst, 16, (head, out))
        if out[0] != -out[1]:
            with ec.lock:
                for iid in ec.local:
                    hist = ec.history[iid]
                    if hist and hist[-1][0] == seq:
                        hist[-1] = (seq, ("failed",))
            raise CollectiveMismatchError(
                f"collective #{seq} of {ec.name}: members called it with different arguments; this member "
                f"called {_describe(key)} (every member must call the same collective with the same dtype, "
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


# -- the calling member -----------------------------------------------------------------------
def _blocked(rt: Runtime) -> contextlib.AbstractContextManager:
    """Mark the calling thread as waiting inside yrmpi for the whole call: the runtime then never
    interrupts it asynchronously (which could free buffers MPI still uses), and deadlock detection
    knows it waits. Ended instances are noticed by `Collectives.wait` instead."""
    blocked = getattr(rt, "blocked", None)
    return blocked() if blocked is not None else contextlib.nullcontext()


def _context(group: str | None, what: str) -> tuple[Collectives, Any, tuple]:
    rt = _rt.current()
    inst = getattr(rt.context, "instance", None)
    if inst is None:
        raise NotInGroupError(
            f"yr.collective.{what}() runs inside an instance method: the driver and plain threads are not "
            f"members of any group")
    if getattr(inst, "oneshot", False):
        raise NotInGroupError(
            f"yr.collective.{what}(): a stateless function (@yr.invoke) is not in a group; create the "
            f"workers as an @yr.instance class")
    if group is None:
        gid = ("cls", inst.owner, inst.cls_name)
    elif isinstance(group, str) and group:
        gid = ("named", inst.owner, group)
    else:
        raise YRTypeError(f"group must be a group name (str) or None, got {group!r}")
    return rt.collectives, inst, gid


def _run(what: str, group: str | None, key: tuple, payload: Any, problem: str | None,
         work: Callable[[Collectives, _Epoch, Any, list, int], list]) -> Any:
    """Enter the group, record the call, combine with local siblings, run `work` once per rank."""
    coll, inst, gid = _context(group, what)
    if problem is not None:  # a local error: the others must not wait for us forever
        coll.reset(gid, None, f"member {inst.label} failed to call {what}: {problem}")
        raise (YRTypeError if "dtype" in problem or "op" in problem else YRValueError)(f"{what}: {problem}")
    with _blocked(coll.rt):
        return _run_member(what, coll, inst, gid, key, payload, work)


def _run_member(what: str, coll: Collectives, inst: Any, gid: tuple, key: tuple, payload: Any,
                work: Callable) -> Any:
    ec, seq = coll.enter(inst, gid)
    try:
        return _run_in(what, coll, inst, gid, key, payload, work, ec, seq)
    finally:
        with ec.lock:
            ec.inside.discard(inst.iid)
        if ec.dead is not None or inst.ended is not None:
            coll.retire(ec, inst.iid)


def _run_in(what: str, coll: Collectives, inst: Any, gid: tuple, key: tuple, payload: Any, work: Callable,
            ec: _Epoch, seq: int) -> Any:
    iid = inst.iid
    with ec.lock:
        ec.history[iid].append((seq, key))
    if len(ec.local) == 1:
        return _result(_work(what, coll, ec, inst, work, [payload], seq)[0])
    li = ec.local_index[iid]
    with ec.lock:
        if ec.dead is not None:
            raise _fresh(ec.dead)
        rnd = ec.rounds.get(seq)
        if rnd is None:
            rnd = ec.rounds[seq] = _Round(len(ec.local))
        rnd.items[li] = (key, payload)
        last = len(rnd.items) == rnd.n
        if last:
            del ec.rounds[seq]
    if not last:
        coll.wait(rnd.done.is_set, inst, ec, event=rnd.done, stall=ec)
        if rnd.error is not None:
            raise _fresh(rnd.error)
        if rnd.results is None:  # woken by a tear-down, not by the sibling that ran the round
            raise _fresh(ec.dead or GroupChangedError(f"{ec.name} was torn down"))
        return _result(rnd.results[li])
    try:
        keys = [rnd.items[i][0] for i in range(rnd.n)]
        if any(k != keys[0] for k in keys):
            bad = next(i for i in range(rnd.n) if keys[i] != keys[0])
            message = (f"collective #{seq} of {ec.name}: member {ec.index[ec.local[0]]} called "
                       f"{_describe(keys[0])} but member {ec.index[ec.local[bad]]} called {_describe(keys[bad])}")
            coll.reset(gid, ec.epoch, message)
            raise CollectiveMismatchError(message)
        rnd.results = _work(what, coll, ec, inst, work, [rnd.items[i][1] for i in range(rnd.n)], seq)
    except BaseException as exc:
        rnd.error = exc if isinstance(exc, Exception) else GroupChangedError(f"{ec.name}: {exc!r}")
        raise
    finally:
        rnd.done.set()
    return _result(rnd.results[li])


def _work(what: str, coll: Collectives, ec: _Epoch, inst: Any, work: Callable, items: list, seq: int) -> list:
    """Run the rank's part of a collective. A failure the other members cannot see (bad
    arguments found late, an MPI error) tears the epoch down, so that they do not wait forever."""
    try:
        return work(coll, ec, inst, items, seq)
    except (CollectiveError, InstanceExitedError):
        raise
    except Exception as exc:
        _fail_epoch(coll, ec, what, seq, exc)
        raise


def _fail_epoch(coll: Collectives, ec: _Epoch, what: str, seq: int, exc: Exception) -> None:
    """Tear the epoch down after a local failure; an MPI error surfaces as a CollectiveError."""
    coll.reset(ec.gid, ec.epoch, f"a member failed in {what} (collective #{seq}): {exc}")
    if isinstance(exc, _MPI().Exception):
        raise CollectiveError(f"{what} in {ec.name} failed in MPI: {exc}") from exc


class _Failed:
    """A per-member failure among a round's results (the others still get theirs)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _result(value: Any) -> Any:
    if isinstance(value, _Failed):
        raise _fresh(value.error)
    return value


def _array_key(kind: str, x: np.ndarray, op: str | None = None) -> tuple:
    return (kind, x.dtype, x.shape, op) if op is not None else (kind, x.dtype, x.shape)


def _contig(x: np.ndarray) -> np.ndarray:
    return x if x.flags.c_contiguous else np.ascontiguousarray(x)


# -- allreduce --------------------------------------------------------------------------------
def allreduce(x: Any, op: str = "sum", group: str | None = None, out: np.ndarray | None = None) -> Any:
    """Combine `x` across the group's members with `op`; every member gets the result.

    Numpy arrays go to MPI as buffers (zero-copy; pass `out=` to reuse an output buffer, or
    `out=x` to reduce in place). Other values (numbers, small picklable objects) are gathered
    and combined with Python operators in group order.
    """
    rt = _rt.active()
    if rt is not None and type(x) is np.ndarray and (out is None or type(out) is np.ndarray):
        inst = getattr(rt.context, "instance", None)
        if inst is not None:
            fast = rt.collectives.fast.get((inst.iid, group, x.dtype, x.shape, op))
            if fast is not None:
                result = fast.allreduce(x, out, inst)
                if result is not None:
                    return result
    if not isinstance(x, np.ndarray):
        problem = None if op in OPS else f"op must be one of {', '.join(OPS)}; got {op!r}"
        return _run("allreduce", group, ("allreduce", "object", op), x, problem, functools.partial(_w_obj_reduce, op))
    problem = _array_problem(x, op)
    if problem is None and out is not None:
        if not isinstance(out, np.ndarray) or out.shape != x.shape or out.dtype != x.dtype:
            problem = f"out must be an array of shape {x.shape} and dtype {x.dtype}"
        elif not out.flags.c_contiguous:
            problem = "out must be C-contiguous"
    x = _contig(x)
    key = _array_key("allreduce", x, op)
    result = _run("allreduce", group, key, (x, out), problem, functools.partial(_w_allreduce, op))
    _Fast.prepare(group, key, op)
    return result


class _Fast:
    """A prepared allreduce for one member and one signature: the steady state of a training
    loop (one member per rank, same shape every step) costs a few attribute checks, the
    bookkeeping the switch-over and mismatch diagnosis need, and the MPI call."""

    __slots__ = ("coll", "ec", "comm", "mop", "key", "mean", "mkey", "ckey", "last", "persistent")

    def __init__(self, coll: Collectives, ec: _Epoch, comm: Any, key: tuple, op: str, mkey: tuple,
                 ckey: tuple) -> None:
        self.coll, self.ec, self.comm, self.key, self.mkey, self.ckey = coll, ec, comm, key, mkey, ckey
        self.mop = _mpi_op(op, key[1])
        self.mean = op == "mean"
        self.last: tuple | None = None  # the (x, out) of the previous call
        self.persistent: tuple | None = None  # (x, out, request): MPI_Allreduce_init on those buffers

    def _request(self, x: np.ndarray, out: np.ndarray) -> Any:
        """A started request. The same (x, out) twice in a row (a training loop) gets a persistent
        collective (MPI-4), which skips rebuilding the schedule each call; it holds the buffers."""
        p = self.persistent
        if p is not None and p[0] is x and p[1] is out:
            p[2].Start()
            return p[2]
        send = _mpi_module.IN_PLACE if out is x else x
        last = self.last
        if last is not None and last[0] is x and last[1] is out and hasattr(self.comm, "Allreduce_init"):
            try:
                req = self.comm.Allreduce_init(send, out, self.mop)
            except (NotImplementedError, _mpi_module.Exception):
                req = None
            if req is not None:
                self.drop_persistent()
                self.persistent = (x, out, req)
                self.ec.persistent.append(req)
                req.Start()
                return req
        self.last = (x, out)
        return self.comm.Iallreduce(send, out, self.mop)

    def drop_persistent(self) -> None:
        p, self.persistent = self.persistent, None
        if p is not None and p[2] in self.ec.persistent:
            self.ec.persistent.remove(p[2])
            try:
                p[2].Free()
            except Exception:
                pass

    @staticmethod
    def prepare(group: str | None, key: tuple, op: str) -> None:
        """After a successful call on the general path: prepare the next ones, if they qualify."""
        rt = _rt.active()
        inst = getattr(rt.context, "instance", None) if rt is not None else None
        if inst is None:
            return
        coll = rt.collectives
        mkey = ((("named", inst.owner, group) if group else ("cls", inst.owner, inst.cls_name)), inst.iid)
        ec = coll.members.get(mkey)
        if ec is None or ec.dead is not None or len(ec.local) != 1 or ec.nranks < 2:
            return
        comm = ec.comms.get(key)
        ckey = (inst.iid, group, key[1], key[2], op)
        if comm is not None and len(coll.fast) < 4 * MAX_COMMS:
            coll.fast[ckey] = _Fast(coll, ec, comm, key, op, mkey, ckey)

    def allreduce(self, x: np.ndarray, out: np.ndarray | None, inst: Any) -> np.ndarray | None:
        """The result, or None: then the general path takes over (the epoch changed, odd buffers)."""
        ec, coll, iid = self.ec, self.coll, inst.iid
        if not x.flags.c_contiguous or (out is not None and out is not x and (
                out.shape != x.shape or out.dtype != x.dtype or not out.flags.c_contiguous)):
            return None
        # Lock-free against the switch-over (GIL order): we count this call, then look at
        # switch_wanted; the handler sets switch_wanted, then reads the counts. If we see it set,
        # we cannot tell whether it counted us: undo, and let the general path settle it.
        started = ec.started
        seq = started[iid] + 1
        started[iid] = seq
        ec.inside.add(iid)
        if ec.switch_wanted or ec.dead is not None:
            started[iid] = seq - 1
            ec.inside.discard(iid)
            coll.fast.pop(self.ckey, None)
            self.drop_persistent()
            return None
        ec.history[iid].append((seq, self.key))
        with Shield(inst):  # as in Runtime.blocked: inside yrmpi, the end of the instance is noticed, not raised in
            try:
                if out is None:
                    out = np.empty_like(x)
                req = self._request(x, out)
                test = req.Test
                for _ in range(SPIN_TESTS):
                    if test():
                        break
                else:
                    try:
                        coll.mpi_wait(req, ec, inst, x.nbytes, (x, out))
                    except BaseException:
                        if self.persistent is not None and self.persistent[2] is req:
                            self.persistent = None  # still active: never Start it again, never Free it
                            ec.persistent.remove(req)
                        raise
                if self.mean:
                    out /= ec.size
                return out
            except (CollectiveError, InstanceExitedError):
                raise
            except Exception as exc:
                _fail_epoch(coll, ec, "allreduce", seq, exc)
                raise
            finally:
                ec.inside.discard(iid)  # atomic; a tear-down that saw us inside is noticed just below
                if ec.dead is not None or inst.ended is not None:
                    coll.retire(ec, iid)


def _w_allreduce(op: str, coll: Collectives, ec: _Epoch, inst: Any, items: list, seq: int) -> list:
    x0 = items[0][0]
    key = _array_key("allreduce", x0, op)
    mop = _mpi_op(op, x0.dtype)
    if len(items) == 1:
        x, out = items[0]
        if out is None:
            out = np.empty_like(x)
        if ec.nranks > 1:
            comm = coll.comm_for(ec, key, [_sig(key)], inst, seq)
            send = _MPI().IN_PLACE if out is x else x
            coll.mpi_wait(comm.Iallreduce(send, out, mop), ec, inst, x.nbytes, (x, out))
        elif out is not x:
            np.copyto(out, x)
        if op == "mean":
            out /= ec.size
        return [out]
    ufunc = _ufuncs[op]
    acc = np.array(items[0][0], copy=True)
    for x, _ in items[1:]:
        ufunc(acc, x, out=acc)
    if ec.nranks > 1:
        comm = coll.comm_for(ec, key, [_sig(key)], inst, seq)
        coll.mpi_wait(comm.Iallreduce(_MPI().IN_PLACE, acc, mop), ec, inst, acc.nbytes, (acc,))
    if op == "mean":
        acc /= ec.size
    return _distribute(acc, [out for _, out in items])


def _distribute(value: np.ndarray, outs: list) -> list:
    """One result per local member: into its `out`, else the first takes `value`, others copies."""
    results = []
    taken = False
    for out in outs:
        if out is not None:
            np.copyto(out, value)
            results.append(out)
        elif not taken:
            results.append(value)
            taken = True
        else:
            results.append(value.copy())
    return results


# -- objects ----------------------------------------------------------------------------------
def _gather_objects(coll: Collectives, ec: _Epoch, inst: Any, objs: list, seq: int, key: tuple) -> list:
    """Every member's object, in group order (pickled; for small values)."""
    if ec.nranks == 1:
        return list(objs)
    from ..transport.wire import dumps

    MPI = _MPI()
    comm = coll.comm_for(ec, key, [_sig(key)], inst, seq)
    blob = np.frombuffer(dumps(list(objs)), dtype=np.uint8)
    sizes = np.zeros(ec.nranks, dtype=np.int64)
    mine = np.array([blob.size], dtype=np.int64)
    coll.mpi_wait(comm.Iallgather(mine, sizes), ec, inst, 8 * ec.nranks, (mine, sizes))
    counts = [int(c) for c in sizes]
    displs = [0, *itertools.accumulate(counts)][:-1]
    recv = np.empty(sum(counts), dtype=np.uint8)
    coll.mpi_wait(comm.Iallgatherv(blob, [recv, (counts, displs), MPI.BYTE]), ec, inst, recv.size, (blob, recv))
    rank_major: list = []
    for start, count in zip(displs, counts):
        rank_major.extend(pickle.loads(recv[start:start + count].tobytes()))
    return [rank_major[p] for p in ec.gather_index]


def _w_obj_reduce(op: str, coll: Collectives, ec: _Epoch, inst: Any, items: list, seq: int) -> list:
    values = _gather_objects(coll, ec, inst, items, seq, ("allreduce", "object", op))
    try:
        total = functools.reduce(_pyops[op], values)
        if op == "mean":
            total = total / ec.size
    except Exception as exc:
        raise YRTypeError(f"allreduce(op={op!r}) of {type(values[0]).__name__} values failed: {exc}") from exc
    return [total] + [pickle.loads(pickle.dumps(total)) for _ in items[1:]]


# -- allgather --------------------------------------------------------------------------------
def allgather(x: Any, group: str | None = None) -> Any:
    """Every member's `x`, in group order: an array of shape (size, *x.shape), or a list."""
    if not isinstance(x, np.ndarray):
        return _run("allgather", group, ("allgather", "object"), x, None, _w_obj_gather)
    problem = _array_problem(x, None)
    x = _contig(x)
    return _run("allgather", group, _array_key("allgather", x), x, problem, _w_allgather)


def _w_obj_gather(coll: Collectives, ec: _Epoch, inst: Any, items: list, seq: int) -> list:
    values = _gather_objects(coll, ec, inst, items, seq, ("allgather", "object"))
    return [values] + [list(values) for _ in items[1:]]


def _w_allgather(coll: Collectives, ec: _Epoch, inst: Any, items: list, seq: int) -> list:
    x0 = items[0]
    key = _array_key("allgather", x0)
    out = np.empty((ec.size, *x0.shape), dtype=x0.dtype)
    if ec.nranks == 1:
        for g, x in zip((ec.index[iid] for iid in ec.local), items):
            out[g] = x
        return _distribute(out, [None] * len(items))
    comm = coll.comm_for(ec, key, [_sig(key)], inst, seq)
    if ec.simple:
        coll.mpi_wait(comm.Iallgather(x0, out), ec, inst, out.nbytes, (x0, out))
        return [out]
    block = np.stack(items) if len(items) > 1 else x0.reshape((1, *x0.shape))
    counts = [c * x0.size for c in ec.counts]
    displs = [0, *itertools.accumulate(counts)][:-1]
    recv = np.empty_like(out)
    req = comm.Iallgatherv(block, [recv, (counts, displs), _mpi_type(x0.dtype)])
    coll.mpi_wait(req, ec, inst, out.nbytes, (block, recv))
    result = recv if ec.identity_order else recv[ec.gather_index]
    return _distribute(result, [None] * len(items))


# -- reduce_scatter ---------------------------------------------------------------------------
def reduce_scatter(x: np.ndarray, op: str = "sum", group: str | None = None) -> np.ndarray:
    """Combine `x` across members with `op` and give member i the i-th of `size` equal blocks
    along the first axis (x.shape[0] must be a multiple of the group size)."""
    if not isinstance(x, np.ndarray):
        raise YRTypeError(f"reduce_scatter takes a numpy array, got {type(x).__name__}")
    problem = _array_problem(x, op)
    if problem is None and x.ndim == 0:
        problem = "reduce_scatter needs an array with at least one axis"
    x = _contig(x)
    return _run("reduce_scatter", group, _array_key("reduce_scatter", x, op), x, problem,
                functools.partial(_w_reduce_scatter, op))


def _w_reduce_scatter(op: str, coll: Collectives, ec: _Epoch, inst: Any, items: list, seq: int) -> list:
    x0 = items[0]
    if x0.shape[0] % ec.size:
        raise YRValueError(f"reduce_scatter: the first axis ({x0.shape[0]}) must be a multiple of the group "
                           f"size ({ec.size})")
    key = _array_key("reduce_scatter", x0, op)
    block = x0.shape[0] // ec.size
    mop = _mpi_op(op, x0.dtype)
    if ec.simple and ec.nranks > 1:
        out = np.empty((block, *x0.shape[1:]), dtype=x0.dtype)
        comm = coll.comm_for(ec, key, [_sig(key)], inst, seq)
        coll.mpi_wait(comm.Ireduce_scatter_block(x0, out, mop), ec, inst, x0.nbytes, (x0, out))
        if op == "mean":
            out /= ec.size
        return [out]
    acc = np.array(x0, copy=True)
    for x in items[1:]:
        _ufuncs[op](acc, x, out=acc)
    if ec.nranks > 1:
        comm = coll.comm_for(ec, key, [_sig(key)], inst, seq)
        coll.mpi_wait(comm.Iallreduce(_MPI().IN_PLACE, acc, mop), ec, inst, acc.nbytes, (acc,))
    if op == "mean":
        acc /= ec.size
    return [acc[ec.index[iid] * block:(ec.index[iid] + 1) * block].copy() for iid in ec.local]


# -- broadcast --------------------------------------------------------------------------------
def broadcast(x: Any = None, root: int = 0, group: str | None = None) -> Any:
    """The root member's `x` on every member. Arrays travel as buffers: a non-root may pass an
    array of the same shape and dtype to receive into (zero-copy), or None."""
    problem = None
    if isinstance(root, bool) or not isinstance(root, int) or root < 0:
        problem = f"root must be a group rank (int >= 0), got {root!r}"
    elif isinstance(x, np.ndarray):
        problem = _array_problem(x, None)
        x = _contig(x)
    return _run("broadcast", group, ("broadcast", root), x, problem, functools.partial(_w_broadcast, root))


def _header(x: Any) -> tuple[np.ndarray, Any]:
    """The fixed-size header and the data buffer of what the root sends."""
    if isinstance(x, np.ndarray):
        meta, data = ("array", x.dtype.str, x.shape), x
    else:
        from ..transport.wire import dumps

        data = np.frombuffer(dumps(x), dtype=np.uint8)
        meta = ("object", data.size)
    raw = pickle.dumps(meta, protocol=5)
    if len(raw) > HEADER_BYTES:
        raise YRValueError(f"broadcast: an array with {x.ndim} axes is too many to describe in the header")
    head = np.zeros(HEADER_BYTES, dtype=np.uint8)
    head[:len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    return head, data


def _w_broadcast(root: int, coll: Collectives, ec: _Epoch, inst: Any, items: list, seq: int) -> list:
    if root >= ec.size:
        raise YRValueError(f"broadcast: root={root} but {ec.name} has {ec.size} members")
    root_iid = ec.members[root]
    local_root = ec.local_index.get(root_iid)
    key = ("broadcast", root)
    data: Any = None
    if local_root is not None:
        head, data = _header(items[local_root])
    else:
        head = np.zeros(HEADER_BYTES, dtype=np.uint8)
    if ec.nranks > 1:
        comm = coll.comm_for(ec, key, [_sig(key)], inst, seq)
        croot = ec.ranks.index(ec.member_rank[root])
        coll.mpi_wait(comm.Ibcast(head, croot), ec, inst, HEADER_BYTES, (head,))
        meta = pickle.loads(head.tobytes())
        if local_root is None:
            if meta[0] == "array":
                shape, dtype = meta[2], np.dtype(meta[1])
                mine = [x for x in items if isinstance(x, np.ndarray) and x.shape == shape and x.dtype == dtype]
                data = mine[0] if mine else np.empty(shape, dtype=dtype)
            else:
                data = np.empty(meta[1], dtype=np.uint8)
        coll.mpi_wait(comm.Ibcast(data, croot), ec, inst, data.nbytes, (data,))
    else:
        meta = pickle.loads(head.tobytes())
    if meta[0] == "object":
        blob = data.tobytes()
        return [items[i] if i == local_root else pickle.loads(blob) for i in range(len(items))]
    results: list = []
    spare = local_root is None and not any(x is data for x in items)  # we allocated `data`: give it away once
    for i, x in enumerate(items):
        if i == local_root or x is data:
            results.append(x)
        elif isinstance(x, np.ndarray):
            if x.shape != data.shape or x.dtype != data.dtype:
                results.append(_Failed(CollectiveMismatchError(
                    f"broadcast: the root sent {data.dtype}{list(data.shape)} but this member passed "
                    f"{x.dtype}{list(x.shape)} to receive into")))
            else:
                np.copyto(x, data)
                results.append(x)
        elif spare:
            results.append(data)
            spare = False
        else:
            results.append(data.copy())
    return results


# -- barrier and the raw communicator ---------------------------------------------------------
def barrier(group: str | None = None) -> None:
    """Wait until every member of the group has called barrier()."""
    _run("barrier", group, ("barrier",), None, None, _w_barrier)


def _w_barrier(coll: Collectives, ec: _Epoch, inst: Any, items: list, seq: int) -> list:
    if ec.nranks > 1:
        comm = coll.comm_for(ec, ("barrier",), [_sig(("barrier",))], inst, seq)
        coll.mpi_wait(comm.Ibarrier(), ec, inst, 0, ())
    return [None] * len(items)


def comm(group: str | None = None) -> Any:
    """The group's mpi4py communicator for your own MPI code (rank i there is group rank i).

    The first call in an epoch is collective (every member must call it); later calls return the
    same communicator. It needs one member per rank (e.g. InvokeOptions(cpu=1000) each).
    """
    coll, inst, gid = _context(group, "comm")
    ec = coll.members.get((gid, inst.iid))
    if ec is not None and ec.dead is None and not ec.switch_wanted and ("comm",) in ec.comms:
        return ec.comms[("comm",)]
    return _run("comm", group, ("comm",), None, None, _w_comm)


def _w_comm(coll: Collectives, ec: _Epoch, inst: Any, items: list, seq: int) -> list:
    if not ec.simple:
        raise CollectiveError(
            f"yr.collective.comm(): members of {ec.name} share ranks ({ec.size} members on {ec.nranks} ranks), "
            f"so no MPI communicator has one rank per member; give each member a rank of its own "
            f"(e.g. InvokeOptions(cpu=1000)) or use the yr.collective functions, which combine locally")
    found = ec.comms.get(("comm",))
    if found is None:
        found = coll.comm_for(ec, ("comm",), [_sig(("comm",))], inst, seq)
    return [found]


def rank(group: str | None = None) -> int:
    """This member's position in its group: its creation order among live siblings."""
    coll, inst, gid = _context(group, "rank")
    with _blocked(coll.rt):
        return coll.position(inst, gid)[0]


def size(group: str | None = None) -> int:
    """How many live members the group has."""
    coll, inst, gid = _context(group, "size")
    with _blocked(coll.rt):
        return coll.position(inst, gid)[1]


# -- explicit groups --------------------------------------------------------------------------
def create_group(handles: Sequence[Any], name: str) -> str:
    """Make the instances behind `handles` (children of the caller) a group called `name`, in
    that order; members pass `group=name` to the collective functions. Returns the name."""
    from ..api.handles import InstanceHandle

    rt = _rt.current()
    if not isinstance(name, str) or not name:
        raise YRTypeError(f"create_group needs a non-empty str name, got {name!r}")
    if not isinstance(handles, (list, tuple)) or not handles:
        raise YRValueError("create_group needs a non-empty list of instance handles")
    iids = []
    for h in handles:
        if not isinstance(h, InstanceHandle):
            raise YRTypeError(f"create_group takes instance handles, got {type(h).__name__}")
        iids.append(h._state.iid)
    if len(set(iids)) != len(iids):
        raise YRValueError("create_group got the same instance twice")
    inst = getattr(rt.context, "instance", None)
    owner = inst.iid if inst is not None else None
    with _blocked(rt):
        reply = rt.collectives.request("group_create", owner, name, iids, inst=inst)
    if reply is not None:
        raise YRValueError(reply)
    return name


def destroy_group(name: str) -> None:
    """Remove an explicit group; members blocked in it get GroupChangedError."""
    rt = _rt.current()
    inst = getattr(rt.context, "instance", None)
    owner = inst.iid if inst is not None else None
    with _blocked(rt):
        reply = rt.collectives.request("group_destroy", owner, name, inst=inst)
    if reply is not None:
        raise YRValueError(reply)


# -- the scheduler's registry (rank 0) --------------------------------------------------------
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
    probe: tuple | None = None  # (probe id, epoch, ranks still to answer, histories)
    announced: bool = False  # the members' creator rank knows the group is in use


class GroupRegistry:
    """Group membership on rank 0: who is in which group, epochs, tags, tear-downs, probes."""

    def __init__(self, sched: Scheduler) -> None:
        self.sched = sched
        self.rt = sched.rt
        self.groups: dict[tuple, _GroupState] = {}
        self.siblings: dict[tuple, list[int]] = {}  # (owner, cls) -> live iids, creation order
        self.named_of: dict[int, set[tuple]] = {}  # iid -> explicit groups it is in
        self._tags = itertools.count(1)
        self._probes = itertools.count(1)
        self._versions = itertools.count(2)  # one counter for all groups: a group that is dropped
        self._epochs = itertools.count(1)  # and made again never reuses a version or an epoch

    # -- hooks from the scheduler ---------------------------------------------------------
    def record_added(self, rec: Record) -> None:
        if rec.spec.get("oneshot"):
            return
        self.siblings.setdefault((rec.owner, rec.cls), []).append(rec.iid)
        g = self.groups.get(("cls", rec.owner, rec.cls))
        if g is not None:
            self._changed(g, False, f"{rec.cls} instance {rec.iid:x} was added to the group", "changed")

    def record_ended(self, rec: Record) -> None:
        """A record ended: drop it from its groups, tear down groups it owned."""
        sibs = self.siblings.get((rec.owner, rec.cls))
        if sibs is not None and rec.iid in sibs:
            sibs.remove(rec.iid)
            if not sibs:
                del self.siblings[(rec.owner, rec.cls)]
            g = self.groups.get(("cls", rec.owner, rec.cls))
            if g is not None:
                self._changed(g, True, f"member {rec.cls} instance {rec.iid:x} ended", "changed")
                if not sibs:
                    del self.groups[g.gid]
        for gid in self.named_of.pop(rec.iid, ()):
            g = self.groups.get(gid)
            if g is not None:
                self._changed(g, True, f"member {rec.cls} instance {rec.iid:x} ended", "changed")
        for gid in [gid for gid in self.groups if gid[1] == rec.iid]:
            self._drop(self.groups[gid], f"its owner {rec.cls} instance {rec.iid:x} ended")

    def member_restarted(self, rec: Record) -> None:
        """A restart that keeps the instance id (and its place): the old incarnation's epochs end."""
        gids = [("cls", rec.owner, rec.cls), *self.named_of.get(rec.iid, ())]
        for gid in gids:
            g = self.groups.get(gid)
            if g is not None:
                self._changed(g, True, f"member {rec.cls} instance {rec.iid:x} restarted", "changed")

    # -- helpers --------------------------------------------------------------------------
    def _owner_alive(self, owner: int | None) -> bool:
        rec = self.sched.records.get(owner) if owner is not None else None
        return owner is None or (rec is not None and rec.state != "ended")

    def _get(self, gid: tuple) -> _GroupState | None:
        g = self.groups.get(gid)
        if g is None and gid[0] == "cls" and self._owner_alive(gid[1]):
            g = self.groups[gid] = _GroupState(gid, version=next(self._versions))
        return g

    def _members(self, g: _GroupState) -> list[int]:
        if g.explicit is not None:
            records = self.sched.records
            return [i for i in g.explicit if i in records and records[i].state != "ended"]
        return self.siblings.get((g.gid[1], g.gid[2]), [])

    def _absent(self, gid: tuple) -> str:
        if not self._owner_alive(gid[1]):
            return f"{_group_label(gid)} is gone: its owner has ended"
        return (f"no group named {gid[2]!r} was created by this instance's owner "
                f"(yr.collective.create_group(handles, name=...))")

    def _changed(self, g: _GroupState, hard: bool, reason: str, kind: str) -> None:
        g.version = next(self._versions)
        targets = g.ranks | g.watchers | set(g.joined.values())
        for rank in targets:
            self.rt.send(rank, ("group_changed", g.gid, g.version, hard, reason, kind))
        if hard:
            g.carved_members = set()
            g.probe = None
            for iid, rank in g.joined.items():
                self.rt.send(rank, ("group_fail", g.gid, iid, f"{_group_label(g.gid)} changed: {reason}", kind))
            g.joined = {}
        else:
            self._try_go(g)

    def _drop(self, g: _GroupState, reason: str) -> None:
        self._changed(g, True, reason, "changed")
        self.groups.pop(g.gid, None)
        for iid in g.explicit or ():
            named = self.named_of.get(iid)
            if named is not None:
                named.discard(g.gid)

    def _try_go(self, g: _GroupState) -> None:
        members = self._members(g)
        if not members or any(m not in g.joined for m in members):
            return
        g.epoch = next(self._epochs)
        tag = next(self._tags) % 32767 + 1  # a distinct tag per carving (MPI guarantees >= 32767)
        view = [(m, g.joined[m]) for m in members]
        g.ranks = {r for _, r in view}
        g.carved_members = set(members)
        g.joined = {}
        g.probe = None
        for rank in g.ranks:
            self.rt.send(rank, ("group_go", g.gid, g.epoch, g.version, tag, view))
        if g.explicit is None and not g.announced:
            g.announced = True
            records = self.sched.records
            for rank in {records[m].creator for m in members if m in records}:
                self.rt.send(rank, ("group_active", g.gid))

    # -- messages -------------------------------------------------------------------------
    def on_join(self, gid: tuple, iid: int, rank: int, prev_epoch: int) -> None:
        g = self._get(gid)
        if g is None:
            self.rt.send(rank, ("group_fail", gid, iid, self._absent(gid), "absent"))
            return
        if iid not in self._members(g):
            rec = self.sched.records.get(iid)
            what = f"{rec.cls} instance {iid:x}" if rec is not None else f"instance {iid:x}"
            self.rt.send(rank, ("group_fail", gid, iid, f"{what} is not a member of {_group_label(gid)}", "absent"))
            return
        if iid in g.carved_members and prev_epoch < g.epoch:
            return  # the current epoch already includes it: its "go" is on the way or arrived
        g.joined[iid] = rank
        self._try_go(g)

    def on_query(self, key: int, requester: int, gid: tuple, iid: int) -> None:
        g = self._get(gid)
        members = self._members(g) if g is not None else []
        if g is None or iid not in members:
            reply: Any = self._absent(gid) if g is None else f"instance {iid:x} is not a member of {_group_label(gid)}"
        else:
            g.watchers.add(requester)
            reply = (g.version, members.index(iid), len(members))
        self.rt.send(requester, ("group_reply", key, reply))

    def on_create(self, key: int, requester: int, owner: int | None, name: str, iids: list[int]) -> None:
        gid = ("named", owner, name)
        problem = None
        if gid in self.groups:
            problem = f"a group named {name!r} already exists; destroy_group({name!r}) first or pick another name"
        for iid in iids:
            rec = self.sched.records.get(iid)
            if problem is None and (rec is None or rec.state == "ended"):
                problem = f"create_group({name!r}): instance {iid:x} does not exist (ended?)"
            elif problem is None and rec.owner != owner:
                problem = (f"create_group({name!r}): {rec.cls} instance {iid:x} was not created by the caller; "
                           f"a group is made by the owner of its members")
        if problem is None:
            self.groups[gid] = _GroupState(gid, explicit=list(iids), version=next(self._versions))
            for iid in iids:
                self.named_of.setdefault(iid, set()).add(gid)
        self.rt.send(requester, ("group_reply", key, problem))

    def on_destroy(self, key: int, requester: int, owner: int | None, name: str) -> None:
        g = self.groups.get(("named", owner, name))
        if g is None:
            self.rt.send(requester, ("group_reply", key, f"destroy_group: no group named {name!r}"))
            return
        self._drop(g, f"group {name!r} was destroyed")
        self.rt.send(requester, ("group_reply", key, None))

    def on_reset(self, gid: tuple, epoch: int | None, reason: str, kind: str) -> None:
        g = self.groups.get(gid)
        if g is None:
            return
        if epoch is not None and (epoch != g.epoch or not g.carved_members):
            return  # that epoch is already gone
        self._changed(g, True, reason, kind)

    def on_stall(self, gid: tuple, epoch: int) -> None:
        """A member waits long in a collective: compare the members' recent call signatures."""
        g = self.groups.get(gid)
        if g is None or epoch != g.epoch or not g.carved_members or g.probe is not None:
            return
        probe = next(self._probes)
        g.probe = (probe, epoch, set(g.ranks), {})
        for rank in g.ranks:
            self.rt.send(rank, ("coll_probe", gid, epoch, probe))

    def on_history(self, gid: tuple, epoch: int, probe: int, rank: int, found: dict) -> None:
        g = self.groups.get(gid)
        if g is None or g.probe is None or g.probe[0] != probe:
            return
        _, _, waiting, histories = g.probe
        waiting.discard(rank)
        histories.update(found)
        if waiting:
            return
        g.probe = None
        problem = _compare(histories, [m for m in self._members(g) if m in histories])
        if problem is not None:
            self._changed(g, True, f"{_group_label(gid)}: {problem}", "mismatch")


def _compare(histories: dict[int, tuple], order: list[int]) -> str | None:
    """The earliest collective that two members called differently, described; None if none."""
    by_seq: dict[int, list[tuple[int, tuple]]] = {}
    for pos, iid in enumerate(order):
        for seq, key in histories[iid][1]:
            by_seq.setdefault(seq, []).append((pos, key))
    for seq in sorted(by_seq):
        calls = by_seq[seq]
        for pos, key in calls[1:]:
            if key != calls[0][1]:
                return (f"collective #{seq}: member {calls[0][0]} called {_describe(calls[0][1])} but member "
                        f"{pos} called {_describe(key)}")
    return None
