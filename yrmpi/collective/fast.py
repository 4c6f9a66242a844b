"""The allreduce fast path: the steady state of a training loop.

After a general-path allreduce succeeds, a member alone on its rank gets a `FastAllreduce` for
that signature (group, dtype, shape, op). The next calls with it cost a few attribute checks,
the bookkeeping that the switch-over and mismatch diagnosis need, and the MPI call; anything
unusual (the epoch changed, odd buffers) hands the call back to the general path.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.errors import InstanceExitedError
from ..transport.interrupt import Shield
from . import membership
from .calls import fail_epoch, group_id
from .epoch import Epoch
from .errors import CollectiveError
from .membership import MAX_COMMS, Collectives
from .ops import mpi, mpi_op
from .waiting import SPIN_TESTS


class FastAllreduce:
    """A prepared allreduce for one member and one signature."""

    __slots__ = ("coll", "ec", "comm", "mop", "key", "mean", "mkey", "ckey", "last", "persistent", "MPI")

    def __init__(self, coll: Collectives, ec: Epoch, comm: Any, key: tuple, op: str, mkey: tuple,
                 ckey: tuple) -> None:
        self.coll, self.ec, self.comm, self.key, self.mkey, self.ckey = coll, ec, comm, key, mkey, ckey
        self.mop = mpi_op(op, key[1])
        self.mean = op == "mean"
        self.MPI = mpi()
        self.last: tuple | None = None  # the (x, out) of the previous call
        self.persistent: tuple | None = None  # (x, out, request): MPI_Allreduce_init on those buffers

    @staticmethod
    def prepare(group: str | None, key: tuple, op: str) -> None:
        """After a successful call on the general path: prepare the next ones, if they qualify."""
        coll = membership.installed
        inst = coll.current_instance() if coll is not None else None
        if inst is None:
            return
        mkey = (group_id(inst, group), inst.iid)
        ec = coll.members.get(mkey)
        if ec is None or ec.dead is not None or len(ec.local) != 1 or ec.nranks < 2:
            return
        comm = ec.comms.get(key)
        ckey = (inst.iid, group, key[1], key[2], op)
        if comm is not None and len(coll.fast) < 4 * MAX_COMMS:
            coll.fast[ckey] = FastAllreduce(coll, ec, comm, key, op, mkey, ckey)

    def _request(self, x: np.ndarray, out: np.ndarray) -> Any:
        """A started request. The same (x, out) twice in a row (a training loop) gets a persistent
        collective (MPI-4), which skips rebuilding the schedule each call; it holds the buffers."""
        p = self.persistent
        if p is not None and p[0] is x and p[1] is out:
            p[2].Start()
            return p[2]
        send = self.MPI.IN_PLACE if out is x else x
        last = self.last
        if last is not None and last[0] is x and last[1] is out and hasattr(self.comm, "Allreduce_init"):
            try:
                req = self.comm.Allreduce_init(send, out, self.mop)
            except (NotImplementedError, self.MPI.Exception):
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
        with Shield(inst):  # as on the general path: the end of the instance is noticed, not raised in
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
                fail_epoch(coll, ec, "allreduce", seq, exc)
                raise
            finally:
                ec.inside.discard(iid)  # atomic; a tear-down that saw us inside is noticed just below
                if ec.dead is not None or inst.ended is not None:
                    coll.retire(ec, iid)
