"""One member's collective call: find its group, enter the epoch, record the call, combine
with the members that share this rank, and run the kernel (`algorithms`) once per rank."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..core.errors import InstanceExitedError, YRTypeError, YRValueError
from ..core.groups import class_group, describe_call, named_group
from ..transport.interrupt import Shield
from .epoch import Epoch, Failed, Round
from .errors import CollectiveError, CollectiveMismatchError, GroupChangedError, NotInGroupError, fresh
from .membership import Collectives, Member, engine
from .ops import mpi

#: A kernel: (engine, epoch, member, the local members' inputs in local order, sequence number)
#: -> one result per local member.
Kernel = Callable[[Collectives, Epoch, Any, list, int], list]
DEATH_NOTICE_S = 2.0  # how long an MPI call failed by a rank death waits for the registry's word


def group_id(inst: Member, group: str | None) -> tuple:
    """The group a member names: its class group (None) or one made by its owner (a name)."""
    if group is None:
        return class_group(inst.owner, inst.cls_name)
    if isinstance(group, str) and group:
        return named_group(inst.owner, group)
    raise YRTypeError(f"group must be a group name (str) or None, got {group!r}")


def member_context(group: str | None, what: str) -> tuple[Collectives, Member, tuple]:
    """This process's engine, the calling member and the group it names (or why it has none)."""
    coll = engine()
    inst = coll.current_instance()
    if inst is None:
        raise NotInGroupError(
            f"yr.collective.{what}() runs inside an instance method: the driver and plain threads are not "
            f"members of any group")
    if getattr(inst, "oneshot", False):
        raise NotInGroupError(
            f"yr.collective.{what}(): a stateless function (@yr.invoke) is not in a group; create the "
            f"workers as an @yr.instance class")
    return coll, inst, group_id(inst, group)


def run(what: str, group: str | None, key: tuple, payload: Any, problem: str | None, work: Kernel) -> Any:
    """Enter the group, record the call, combine with local siblings, run `work` once per rank.

    The whole call is shielded (`Shield`): the end of the instance is never raised into it
    asynchronously (which could free buffers MPI still uses); the waits notice it instead."""
    coll, inst, gid = member_context(group, what)
    if problem is not None:  # a local error: the others must not wait for us forever
        coll.reset(gid, None, f"member {inst.label} failed to call {what}: {problem}")
        raise (YRTypeError if "dtype" in problem or "op" in problem else YRValueError)(f"{what}: {problem}")
    with Shield(inst):
        return _run_member(what, coll, inst, gid, key, payload, work)


def _run_member(what: str, coll: Collectives, inst: Member, gid: tuple, key: tuple, payload: Any,
                work: Kernel) -> Any:
    ec, seq = coll.enter(inst, gid)
    try:
        return _run_in(what, coll, inst, gid, key, payload, work, ec, seq)
    finally:
        with ec.lock:
            ec.inside.discard(inst.iid)
        if ec.dead is not None or inst.ended is not None:
            coll.retire(ec, inst.iid)


def _run_in(what: str, coll: Collectives, inst: Member, gid: tuple, key: tuple, payload: Any, work: Kernel,
            ec: Epoch, seq: int) -> Any:
    iid = inst.iid
    with ec.lock:
        ec.history[iid].append((seq, key))
    if len(ec.local) == 1:
        return unwrap(_work(what, coll, ec, inst, work, [payload], seq)[0])
    li = ec.local_index[iid]
    with ec.lock:
        if ec.dead is not None:
            raise fresh(ec.dead)
        rnd = ec.rounds.get(seq)
        if rnd is None:
            rnd = ec.rounds[seq] = Round(len(ec.local))
        rnd.items[li] = (key, payload)
        last = len(rnd.items) == rnd.n
        if last:
            del ec.rounds[seq]
    if not last:
        coll.wait(rnd.done.is_set, inst, ec, event=rnd.done, stall=ec)
        if rnd.error is not None:
            raise fresh(rnd.error)
        if rnd.results is None:  # woken by a tear-down, not by the sibling that ran the round
            raise fresh(ec.dead or GroupChangedError(f"{ec.name} was torn down"))
        return unwrap(rnd.results[li])
    try:
        keys = [rnd.items[i][0] for i in range(rnd.n)]
        if any(k != keys[0] for k in keys):
            bad = next(i for i in range(rnd.n) if keys[i] != keys[0])
            message = (f"collective #{seq} of {ec.name}: member {ec.index[ec.local[0]]} called "
                       f"{describe_call(keys[0])} but member {ec.index[ec.local[bad]]} called "
                       f"{describe_call(keys[bad])}")
            coll.reset(gid, ec.epoch, message)
            raise CollectiveMismatchError(message)
        rnd.results = _work(what, coll, ec, inst, work, [rnd.items[i][1] for i in range(rnd.n)], seq)
    except BaseException as exc:
        rnd.error = exc if isinstance(exc, Exception) else GroupChangedError(f"{ec.name}: {exc!r}")
        raise
    finally:
        rnd.done.set()
    return unwrap(rnd.results[li])


def _work(what: str, coll: Collectives, ec: Epoch, inst: Member, work: Kernel, items: list, seq: int) -> list:
    """Run the rank's part of a collective. A failure the other members cannot see (bad
    arguments found late, an MPI error) tears the epoch down, so that they do not wait forever."""
    try:
        return work(coll, ec, inst, items, seq)
    except (CollectiveError, InstanceExitedError):
        raise
    except Exception as exc:
        fail_epoch(coll, ec, what, seq, exc)
        raise


def fail_epoch(coll: Collectives, ec: Epoch, what: str, seq: int, exc: Exception) -> None:
    """Tear the epoch down after a local failure; an MPI error surfaces as a CollectiveError.
    A member's rank that died (ULFM) fails the MPI call: the registry tears the epoch down as
    soon as it hears of the death, and that error, which names the member, is raised instead."""
    MPI = mpi()
    if isinstance(exc, MPI.Exception) and exc.Get_error_class() == MPI.ERR_PROC_FAILED:
        end = time.monotonic() + DEATH_NOTICE_S
        coll.wait(lambda: ec.dead is not None or time.monotonic() >= end, None, spin=False)
        if ec.dead is not None:
            raise fresh(ec.dead) from exc
    coll.reset(ec.gid, ec.epoch, f"a member failed in {what} (collective #{seq}): {exc}")
    if isinstance(exc, MPI.Exception):
        raise CollectiveError(f"{what} in {ec.name} failed in MPI: {exc}") from exc


def unwrap(value: Any) -> Any:
    """A member's result of a round, or its own failure raised."""
    if isinstance(value, Failed):
        raise fresh(value.error)
    return value
