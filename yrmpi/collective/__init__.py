"""Communicator subgroups: collectives among the instances that one owner created.

The instances of one class created by one owner (a supervisor instance, or the driver) form that
owner's group for that class; `create_group` makes explicit groups. Inside an instance method,
`allreduce`, `broadcast`, `allgather`, `reduce_scatter` and `barrier` run over an MPI communicator
carved from the world with `Create_group` over the members' ranks alone. See docs/collectives.md.

How it stays correct and interruptible (the parts that are easy to get wrong):
- Carving is a rendezvous through the group registry on rank 0 (`GroupJoin` -> `GroupGo`,
  `yrmpi.scheduling.groups`): a blocking `Create_group` starts only once every member has asked
  for the same epoch, and it runs in a helper thread, so member threads only ever wait on
  nonblocking requests or events (`membership`).
- Every epoch (membership version) gets its own communicator and tag; a member of an old epoch
  cannot match a collective of a new one (`epoch`). An added member switches the old members
  over at the same collective on all of them (one MAX allreduce of their call counts on a
  control communicator); the owner's rank announces the addition to the siblings' ranks itself
  (`Collectives.created`, called from Caller.create), because its next calls to them could
  overtake the registry's notice. A member that ends, or a mismatch, tears the epoch down:
  members blocked in it get an error, and the next call re-carves.
- Each distinct call signature (kind, dtype, shape, op) gets its own duplicate communicator the
  first time it is used (after checking all members agree), so members that disagree can never
  match each other's buffers; they stall instead, and the registry, asked by a stalled member,
  compares the members' recent call signatures and tears the epoch down with a clear message.
- Several members on one rank combine locally first; only one thread per rank talks MPI
  (`calls`, `algorithms`).
- Waiting spins briefly on `Test`, then sleeps with backoff, polls the rank's wire (so that
  tear-down messages arrive even when every serve thread is busy) and notices an ended
  instance (`waiting`).
- The steady state of a training loop (one member per rank, same signature, same buffers)
  skips all of the above but the bookkeeping, and uses a persistent MPI collective (`fast`).

This module holds the public functions only; the engine and the tuning constants are re-exported
(`X as X` imports) from the modules that use them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..core.errors import YRTypeError, YRValueError
from ..core.messages import GroupCreate, GroupDestroy
from ..core.refs import get as _get
from ..core.refs import slot_of as _slot_of
from ..transport.interrupt import Shield
from . import membership as _membership
from . import tensors as _tensors
from .algorithms import HEADER_BYTES as HEADER_BYTES
from .algorithms import (
    allgather_arrays,
    allgather_objects,
    allreduce_arrays,
    allreduce_objects,
    barrier_all,
    broadcast_value,
    reduce_scatter_arrays,
    user_communicator,
)
from .calls import member_context, run
from .epoch import HISTORY as HISTORY
from .errors import CollectiveError, CollectiveMismatchError, GroupChangedError, GroupFailedError, NotInGroupError
from .fast import FastAllreduce
from .membership import MAX_COMMS as MAX_COMMS
from .membership import Collectives as Collectives
from .ops import OPS, array_key, array_problem, contiguous, op_problem, root_problem
from .waiting import BANDWIDTH as BANDWIDTH
from .waiting import FAST_S as FAST_S
from .waiting import FAST_SLEEP_S as FAST_SLEEP_S
from .waiting import SLEEP_MAX_S as SLEEP_MAX_S
from .waiting import SPIN_MAX_S as SPIN_MAX_S
from .waiting import SPIN_S as SPIN_S
from .waiting import SPIN_TESTS as SPIN_TESTS
from .waiting import SPIN_YIELD as SPIN_YIELD
from .waiting import STALL_MAX_S as STALL_MAX_S
from .waiting import STALL_S as STALL_S
from .waiting import WIRE_S as WIRE_S

__all__ = [
    "CollectiveError", "CollectiveMismatchError", "GroupChangedError", "GroupFailedError", "NotInGroupError",
    "OPS", "allgather", "allreduce", "barrier", "broadcast", "call_all", "comm", "create_group", "destroy_group",
    "rank", "reduce_scatter", "set_fail_fast", "size",
]

# -- allreduce --------------------------------------------------------------------------------
def allreduce(x: Any, op: str = "sum", group: str | None = None, out: np.ndarray | None = None) -> Any:
    """Combine `x` across the group's members with `op`; every member gets the result.

    Numpy arrays go to MPI as buffers (zero-copy; pass `out=` to reuse an output buffer, or
    `out=x` to reduce in place). Other values (numbers, small picklable objects) are gathered
    and combined with Python operators in group order.
    """
    coll = _membership.installed
    if coll is not None and type(x) is np.ndarray and (out is None or type(out) is np.ndarray):
        inst = coll.current_instance()
        if inst is not None:
            fast = coll.fast.get((inst.iid, group, x.dtype, x.shape, op))
            if fast is not None:
                result = fast.allreduce(x, out, inst)
                if result is not None:
                    return result
    if _tensors.is_tensor(x):  # torch tensors: the same path on views of their memory (collective/tensors.py)
        if _tensors.plain(x):
            return _tensors.allreduce(allreduce, x, op, group, out)
        _tensors.pickled("allreduce", x)
    if not isinstance(x, np.ndarray):
        return run("allreduce", group, ("allreduce", "object", op), x, op_problem(op),
                   functools.partial(allreduce_objects, op))
    problem = array_problem(x, op)
    if problem is None and out is not None:
        if not isinstance(out, np.ndarray) or out.shape != x.shape or out.dtype != x.dtype:
            problem = f"out must be an array of shape {x.shape} and dtype {x.dtype}"
        elif not out.flags.c_contiguous:
            problem = "out must be C-contiguous"
    x = contiguous(x)
    key = array_key("allreduce", x, op)
    result = run("allreduce", group, key, (x, out), problem, functools.partial(allreduce_arrays, op))
    FastAllreduce.prepare(group, key, op)
    return result


# -- allgather, reduce_scatter, broadcast, barrier --------------------------------------------
def allgather(x: Any, group: str | None = None) -> Any:
    """Every member's `x`, in group order: an array of shape (size, *x.shape), or a list."""
    if _tensors.is_tensor(x):
        if _tensors.plain(x):
            return _tensors.allgather(allgather, x, group)
        _tensors.pickled("allgather", x)
    if not isinstance(x, np.ndarray):
        return run("allgather", group, ("allgather", "object"), x, None, allgather_objects)
    problem = array_problem(x, None)
    x = contiguous(x)
    return run("allgather", group, array_key("allgather", x), x, problem, allgather_arrays)


def reduce_scatter(x: np.ndarray, op: str = "sum", group: str | None = None) -> np.ndarray:
    """Combine `x` across members with `op` and give member i the i-th of `size` equal blocks
    along the first axis (x.shape[0] must be a multiple of the group size)."""
    if _tensors.is_tensor(x) and _tensors.plain(x):
        return _tensors.reduce_scatter(reduce_scatter, x, op, group)
    if not isinstance(x, np.ndarray):
        raise YRTypeError(f"reduce_scatter takes a numpy array, got {type(x).__name__}")
    problem = array_problem(x, op)
    if problem is None and x.ndim == 0:
        problem = "reduce_scatter needs an array with at least one axis"
    x = contiguous(x)
    return run("reduce_scatter", group, array_key("reduce_scatter", x, op), x, problem,
               functools.partial(reduce_scatter_arrays, op))


def broadcast(x: Any = None, root: int = 0, group: str | None = None) -> Any:
    """The root member's `x` on every member. Arrays travel as buffers: a non-root may pass an
    array of the same shape and dtype to receive into (zero-copy), or None."""
    if _tensors.is_tensor(x):
        if _tensors.plain(x):
            return _tensors.broadcast(broadcast, x, root, group)
        _tensors.pickled("broadcast", x)
    problem = root_problem(root)
    if problem is None and isinstance(x, np.ndarray):
        problem = array_problem(x, None)
        x = contiguous(x)
    return run("broadcast", group, ("broadcast", root), x, problem, functools.partial(broadcast_value, root))


def barrier(group: str | None = None) -> None:
    """Wait until every member of the group has called barrier()."""
    run("barrier", group, ("barrier",), None, None, barrier_all)


# -- the raw communicator, and a member's position --------------------------------------------
def comm(group: str | None = None) -> Any:
    """The group's mpi4py communicator for your own MPI code (rank i there is group rank i).

    The first call in an epoch is collective (every member must call it); later calls return the
    same communicator. It needs one member per rank (e.g. InvokeOptions(cpu=1000) each).
    """
    coll, inst, gid = member_context(group, "comm")
    ec = coll.members.get((gid, inst.iid))
    if ec is not None and ec.dead is None and not ec.switch_wanted and ("comm",) in ec.comms:
        return ec.comms[("comm",)]
    return run("comm", group, ("comm",), None, None, user_communicator)


def rank(group: str | None = None) -> int:
    """This member's position in its group: its creation order among live siblings."""
    coll, inst, gid = member_context(group, "rank")
    with Shield(inst):
        return coll.position(inst, gid)[0]


def size(group: str | None = None) -> int:
    """How many live members the group has."""
    coll, inst, gid = member_context(group, "size")
    with Shield(inst):
        return coll.position(inst, gid)[1]


def set_fail_fast(enabled: bool, group: str | None = None) -> None:
    """Whether an exception in this member's calls fails the group at once (default True): the
    other members in, or entering, a collective of the epoch get GroupFailedError. With False
    (elastic: the owner re-runs or replaces this member), they wait for its next call instead.
    Called by the member itself, e.g. in its constructor; every member of an elastic group calls it."""
    if not isinstance(enabled, bool):
        raise YRTypeError(f"set_fail_fast takes a bool, got {enabled!r}")
    coll, inst, gid = member_context(group, "set_fail_fast")
    coll.set_fail_fast(inst, gid, enabled)


def call_all(handles: Sequence[Any], method: str, *args: Any, timeout: float = -1, **kwargs: Any) -> list:
    """The supervisor's step: call `method(*args, **kwargs)` on every handle (the members of a
    group, in group order) and return their values in order, or stop at the first failure.

    The error raised is the root cause, the failure that reached this rank first (see `yr.get`),
    with `.failed_index`, the position of the member whose call it was, and `.consequences`,
    the failures it caused that had arrived by then (members released with GroupFailedError).
    The other calls are not waited for; with fail-fast groups (the default) the others' calls
    end within milliseconds, so the supervisor can replace that member (or call again) and go on.
    """
    refs = [getattr(handle, method).invoke(*args, **kwargs) for handle in handles]
    try:
        return _get(refs, timeout=timeout)
    except BaseException as exc:
        for i, ref in enumerate(refs):
            if _slot_of(ref).error is exc:
                try:
                    exc.failed_index = i
                except Exception:
                    pass
                break
        raise


# -- explicit groups --------------------------------------------------------------------------
def _instance_id(handle: Any) -> int:
    """The instance behind an instance handle. (The handle class belongs to the api layer,
    above this one: a handle is recognised by its public `instance_id`, the id in hex.)"""
    hex_id = None if isinstance(handle, type) else getattr(handle, "instance_id", None)
    if not isinstance(hex_id, str):
        raise YRTypeError(f"create_group takes instance handles, got {type(handle).__name__}")
    return int(hex_id, 16)


def create_group(handles: Sequence[Any], name: str) -> str:
    """Make the instances behind `handles` (children of the caller) a group called `name`, in
    that order; members pass `group=name` to the collective functions. Returns the name."""
    here = _membership.engine().rank
    if not isinstance(name, str) or not name:
        raise YRTypeError(f"create_group needs a non-empty str name, got {name!r}")
    if not isinstance(handles, (list, tuple)) or not handles:
        raise YRValueError("create_group needs a non-empty list of instance handles")
    iids = [_instance_id(h) for h in handles]
    if len(set(iids)) != len(iids):
        raise YRValueError("create_group got the same instance twice")
    inst = here.current_instance()
    key = here.new_id()
    reply = here.request(GroupCreate(key, here.rank, inst.iid if inst is not None else None, name, iids), key,
                         timeout=None)
    if reply is not None:
        raise YRValueError(reply)
    return name


def destroy_group(name: str) -> None:
    """Remove an explicit group; members blocked in it get GroupChangedError."""
    here = _membership.engine().rank
    inst = here.current_instance()
    key = here.new_id()
    reply = here.request(GroupDestroy(key, here.rank, inst.iid if inst is not None else None, name), key,
                         timeout=None)
    if reply is not None:
        raise YRValueError(reply)
