"""The kernels: one rank's part of each collective, given the inputs of its local members.

A kernel takes (engine, epoch, member, items, seq), where `items` holds the inputs of the
members on this rank in local order, and returns one result per local member. Members on one
rank combine locally first; then one nonblocking MPI collective runs among the epoch's ranks,
on the communicator of the call's signature (`Collectives.comm_for`).
"""

from __future__ import annotations

import functools
import itertools
import pickle
import sys
from typing import Any

import numpy as np

from ..core.errors import YRTypeError, YRValueError
from ..transport.wire import dumps
from . import device
from .device import buffer, copy_into, fits, is_direct
from .epoch import Epoch, Failed
from .errors import CollectiveError, CollectiveMismatchError
from .membership import Collectives, Member
from .ops import PYOPS, UFUNCS, array_key, mpi, mpi_op, mpi_type, signature

HEADER_BYTES = 256  # broadcast header (dtype and shape, or object size)


def distribute(value: np.ndarray, outs: list) -> list:
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


# -- allreduce --------------------------------------------------------------------------------
def allreduce_arrays(op: str, coll: Collectives, ec: Epoch, inst: Member, items: list, seq: int) -> list:
    """items: (x, out or None) per local member."""
    if any(is_direct(x) for x, _ in items):  # a CUDA tensor for a CUDA-aware MPI (collective/device.py)
        return device.allreduce(op, coll, ec, inst, items, seq)
    x0 = items[0][0]
    key = array_key("allreduce", x0, op)
    mop = mpi_op(op, x0.dtype)
    if len(items) == 1:
        x, out = items[0]
        if out is None:
            out = np.empty_like(x)
        if ec.nranks > 1:
            comm = coll.comm_for(ec, key, [signature(key)], inst, seq)
            send = mpi().IN_PLACE if out is x else x
            coll.mpi_wait(comm.Iallreduce(send, out, mop), ec, inst, x.nbytes, (x, out))
        elif out is not x:
            np.copyto(out, x)
        if op == "mean":
            out /= ec.size
        return [out]
    ufunc = UFUNCS[op]
    acc = np.array(items[0][0], copy=True)
    for x, _ in items[1:]:
        ufunc(acc, x, out=acc)
    if ec.nranks > 1:
        comm = coll.comm_for(ec, key, [signature(key)], inst, seq)
        coll.mpi_wait(comm.Iallreduce(mpi().IN_PLACE, acc, mop), ec, inst, acc.nbytes, (acc,))
    if op == "mean":
        acc /= ec.size
    return distribute(acc, [out for _, out in items])


# -- objects ----------------------------------------------------------------------------------
def gather_objects(coll: Collectives, ec: Epoch, inst: Member, objs: list, seq: int, key: tuple) -> list:
    """Every member's object, in group order (pickled; for small values)."""
    if ec.nranks == 1:
        return list(objs)
    MPI = mpi()
    comm = coll.comm_for(ec, key, [signature(key)], inst, seq)
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


def allreduce_objects(op: str, coll: Collectives, ec: Epoch, inst: Member, items: list, seq: int) -> list:
    values = gather_objects(coll, ec, inst, items, seq, ("allreduce", "object", op))
    try:
        total = functools.reduce(PYOPS[op], values)
        if op == "mean":
            total = total / ec.size
    except Exception as exc:
        raise YRTypeError(f"allreduce(op={op!r}) of {type(values[0]).__name__} values failed: {exc}") from exc
    return [total] + [pickle.loads(pickle.dumps(total)) for _ in items[1:]]


# -- allgather --------------------------------------------------------------------------------
def allgather_objects(coll: Collectives, ec: Epoch, inst: Member, items: list, seq: int) -> list:
    values = gather_objects(coll, ec, inst, items, seq, ("allgather", "object"))
    return [values] + [list(values) for _ in items[1:]]


def allgather_arrays(coll: Collectives, ec: Epoch, inst: Member, items: list, seq: int) -> list:
    x0 = items[0]
    key = array_key("allgather", x0)
    out = np.empty((ec.size, *x0.shape), dtype=x0.dtype)
    if ec.nranks == 1:
        for g, x in zip((ec.index[iid] for iid in ec.local), items):
            out[g] = x
        return distribute(out, [None] * len(items))
    comm = coll.comm_for(ec, key, [signature(key)], inst, seq)
    if ec.simple:
        coll.mpi_wait(comm.Iallgather(x0, out), ec, inst, out.nbytes, (x0, out))
        return [out]
    block = np.stack(items) if len(items) > 1 else x0.reshape((1, *x0.shape))
    counts = [c * x0.size for c in ec.counts]
    displs = [0, *itertools.accumulate(counts)][:-1]
    recv = np.empty_like(out)
    req = comm.Iallgatherv(block, [recv, (counts, displs), mpi_type(x0.dtype)])
    coll.mpi_wait(req, ec, inst, out.nbytes, (block, recv))
    result = recv if ec.identity_order else recv[ec.gather_index]
    return distribute(result, [None] * len(items))


# -- reduce_scatter ---------------------------------------------------------------------------
def reduce_scatter_arrays(op: str, coll: Collectives, ec: Epoch, inst: Member, items: list, seq: int) -> list:
    x0 = items[0]
    if x0.shape[0] % ec.size:
        raise YRValueError(f"reduce_scatter: the first axis ({x0.shape[0]}) must be a multiple of the group "
                           f"size ({ec.size})")
    key = array_key("reduce_scatter", x0, op)
    block = x0.shape[0] // ec.size
    mop = mpi_op(op, x0.dtype)
    if ec.simple and ec.nranks > 1:
        out = np.empty((block, *x0.shape[1:]), dtype=x0.dtype)
        comm = coll.comm_for(ec, key, [signature(key)], inst, seq)
        coll.mpi_wait(comm.Ireduce_scatter_block(x0, out, mop), ec, inst, x0.nbytes, (x0, out))
        if op == "mean":
            out /= ec.size
        return [out]
    acc = np.array(x0, copy=True)
    for x in items[1:]:
        UFUNCS[op](acc, x, out=acc)
    if ec.nranks > 1:
        comm = coll.comm_for(ec, key, [signature(key)], inst, seq)
        coll.mpi_wait(comm.Iallreduce(mpi().IN_PLACE, acc, mop), ec, inst, acc.nbytes, (acc,))
    if op == "mean":
        acc /= ec.size
    return [acc[ec.index[iid] * block:(ec.index[iid] + 1) * block].copy() for iid in ec.local]


# -- broadcast --------------------------------------------------------------------------------
def broadcast_header(x: Any) -> tuple[np.ndarray, Any]:
    """The fixed-size header and the data buffer of what the root sends: the header tells the
    others what to receive into (an array's dtype and shape, or a pickle's size)."""
    if isinstance(x, np.ndarray):  # (a tensor's view names its torch dtype: collective/tensors.py)
        meta, data = ("array", x.dtype.str, x.shape, getattr(x, "torch_dtype", None)), x
    elif is_direct(x):  # its memory goes to MPI (collective/device.py)
        meta, data = ("array", device.np_dtype(x).str, tuple(x.shape), str(x.dtype)[6:]), x.contiguous()
    else:
        data = np.frombuffer(dumps(x), dtype=np.uint8)
        meta = ("object", data.size)
    raw = pickle.dumps(meta, protocol=5)
    if len(raw) > HEADER_BYTES:
        raise YRValueError(f"broadcast: an array with {x.ndim} axes is too many to describe in the header")
    head = np.zeros(HEADER_BYTES, dtype=np.uint8)
    head[:len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    return head, data


def broadcast_value(root: int, coll: Collectives, ec: Epoch, inst: Member, items: list, seq: int) -> list:
    if root >= ec.size:
        raise YRValueError(f"broadcast: root={root} but {ec.name} has {ec.size} members")
    root_iid = ec.members[root]
    local_root = ec.local_index.get(root_iid)
    key = ("broadcast", root)
    data: Any = None
    if local_root is not None:
        head, data = broadcast_header(items[local_root])
    else:
        head = np.zeros(HEADER_BYTES, dtype=np.uint8)
    if ec.nranks > 1:
        comm = coll.comm_for(ec, key, [signature(key)], inst, seq)
        croot = ec.ranks.index(ec.member_rank[root])
        coll.mpi_wait(comm.Ibcast(head, croot), ec, inst, HEADER_BYTES, (head,))
        meta = pickle.loads(head.tobytes())
        if local_root is None:
            if meta[0] == "array":
                shape, dtype = meta[2], np.dtype(meta[1])
                mine = [x for x in items if fits(x, shape, dtype) and (isinstance(x, np.ndarray) or x.is_contiguous())]
                data = mine[0] if mine else np.empty(shape, dtype=dtype)
            else:
                data = np.empty(meta[1], dtype=np.uint8)
        coll.mpi_wait(comm.Ibcast(buffer(data) if is_direct(data) else data, croot), ec, inst, data.nbytes, (data,))
    else:
        meta = pickle.loads(head.tobytes())
    if meta[0] == "object":
        blob = data.tobytes()
        return [items[i] if i == local_root else pickle.loads(blob) for i in range(len(items))]
    results: list = []
    spare = local_root is None and not any(x is data for x in items)  # we allocated `data`: give it away once
    shape, dtype = tuple(meta[2]), np.dtype(meta[1])
    for i, x in enumerate(items):
        if i == local_root or x is data:
            results.append(x)
        elif isinstance(x, np.ndarray) or is_direct(x):
            if not fits(x, shape, dtype):
                results.append(Failed(CollectiveMismatchError(
                    f"broadcast: the root sent {dtype}{list(shape)} but this member passed "
                    f"{x.dtype}{list(x.shape)} to receive into")))
            elif isinstance(x, np.ndarray) and isinstance(data, np.ndarray):
                np.copyto(x, data)
                results.append(x)
            else:
                results.append(copy_into(x, data))
        elif spare:
            results.append(data)
            spare = False
        else:
            results.append(data.clone() if is_direct(data) else data.copy())
    if is_direct(data):
        device.sync(data)
    if meta[3]:  # the root sent a tensor: members that passed None get one
        results = [from_header(r, meta[3]) if items[i] is None else r for i, r in enumerate(results)]
    return results


def from_header(arr: Any, torch_dtype: str | None) -> Any:
    """What a member that passed None gets from a broadcast whose root sent a tensor."""
    if not torch_dtype or "torch" not in sys.modules or not isinstance(arr, np.ndarray):
        return arr
    import torch

    t = torch.from_numpy(np.asarray(arr))
    return t.view(torch.bfloat16) if torch_dtype == "bfloat16" else t


# -- barrier and the raw communicator ---------------------------------------------------------
def barrier_all(coll: Collectives, ec: Epoch, inst: Member, items: list, seq: int) -> list:
    if ec.nranks > 1:
        comm = coll.comm_for(ec, ("barrier",), [signature(("barrier",))], inst, seq)
        coll.mpi_wait(comm.Ibarrier(), ec, inst, 0, ())
    return [None] * len(items)


def user_communicator(coll: Collectives, ec: Epoch, inst: Member, items: list, seq: int) -> list:
    if not ec.simple:
        raise CollectiveError(
            f"yr.collective.comm(): members of {ec.name} share ranks ({ec.size} members on {ec.nranks} ranks), "
            f"so no MPI communicator has one rank per member; give each member a rank of its own "
            f"(e.g. InvokeOptions(cpu=1000)) or use the yr.collective functions, which combine locally")
    found = ec.comms.get(("comm",))
    if found is None:
        found = coll.comm_for(ec, ("comm",), [signature(("comm",))], inst, seq)
    return [found]
