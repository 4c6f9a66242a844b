"""CUDA tensors in the collectives: straight to MPI when the MPI library takes device memory
(CUDA-aware), else staged through host memory (collective/tensors.py).

The choice is made once per process, at the first CUDA tensor (`decision`): YRMPI_CUDA_AWARE=1
or 0 forces it (for a site whose MPI is CUDA-aware but does not say so, or a user who wants
staging); unset, the loaded MPI library is asked (Open MPI's MPIX_Query_cuda_support, MPICH's
MPIX_GPU_query_support; mpi4py has no query of its own). That tensor logs which path is in use
and why.

On the direct path allreduce and broadcast hand torch tensors to MPI as buffers (mpi4py reads
their DLPack / CUDA array interface), combine the members of one rank with torch on the device,
and synchronize the current CUDA stream before MPI touches the memory, since MPI knows nothing
of torch's streams. allgather and reduce_scatter, and reductions of bfloat16 and float16 (MPI
cannot reduce them; the host path reduces them in float32), still stage.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.errors import YRValueError
from ..core.log import log
from .ops import mpi, mpi_op, mpi_type, signature

ENV = "YRMPI_CUDA_AWARE"
SETTINGS = {"0": False, "1": True}  # and unset or empty: ask the MPI library
DIRECT_DEVICES = ("cuda",)  # device types whose memory MPI takes itself when it is CUDA-aware
DIRECT_KINDS = ("allreduce", "broadcast")
REDUCING = ("allreduce",)
WIDENED = ("bfloat16", "float16")  # reduced in float32 on the host
DTYPES = ("bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64", "complex64",
          "complex128", "bfloat16")
MPIX_GPU_SUPPORT_CUDA = 0  # MPICH's mpi.h
TORCH_OPS = {"sum": "add", "mean": "add", "prod": "mul", "max": "maximum", "min": "minimum"}


@dataclass(frozen=True)
class Decision:
    direct: bool  # device memory goes to MPI as it is
    why: str


def decide(setting: str | None, reported: Callable[[], bool | None]) -> Decision:
    """The path for CUDA tensors, from YRMPI_CUDA_AWARE (`setting`) or else what the MPI
    library reports (`reported`: True, False, or None when it has no query)."""
    if setting:
        if setting not in SETTINGS:
            raise YRValueError(f"{ENV} must be 1 (device memory straight to MPI), 0 (stage through host "
                               f"memory) or unset (ask the MPI library); got {setting!r}")
        return Decision(SETTINGS[setting], f"{ENV}={setting}")
    said = reported()
    if said is None:
        return Decision(False, "the MPI library has no CUDA query (MPIX_Query_cuda_support, MPIX_GPU_query_support); "
                               f"set {ENV}=1 if it is CUDA-aware")
    return Decision(said, f"the MPI library reports it {'is' if said else 'is not'} CUDA-aware")


def library_reports(lib: Any) -> bool | None:
    """What a loaded MPI library says of CUDA buffers (None: it has no query)."""
    query = getattr(lib, "MPIX_Query_cuda_support", None)  # Open MPI
    if query is not None:
        return bool(query())
    query = getattr(lib, "MPIX_GPU_query_support", None)  # MPICH >= 4.0
    if query is not None:
        flag = ctypes.c_int(0)
        if query(MPIX_GPU_SUPPORT_CUDA, ctypes.pointer(flag)) == 0:
            return bool(flag.value)
    return None


def mpi_library_reports() -> bool | None:
    """Ask the MPI library this process loaded (found in /proc/self/maps; after MPI_Init)."""
    try:
        with open("/proc/self/maps") as fh:
            libs = sorted({p for p in fh.read().split() if "/libmpi" in p and ".so" in p})
        return library_reports(ctypes.CDLL(libs[0])) if libs else None
    except OSError:
        return None


_decision: Decision | None = None


def decision() -> Decision:
    """The process's one decision, made (and logged) the first time a CUDA tensor needs it."""
    global _decision
    if _decision is None:
        _decision = decide(os.environ.get(ENV), mpi_library_reports)
        if _decision.direct:
            log.info("yr.collective: CUDA tensors go to MPI directly (%s)", _decision.why)
        else:
            log.warning("yr.collective: CUDA tensors are staged through host memory (%s); for device "
                        "tensors use the process group of yrmpi.torch (NCCL)", _decision.why)
    return _decision


def route(device: str, dtype: str, kind: str, direct: bool) -> str:
    """How a tensor on `device` of `dtype` takes part in collective `kind`: "device" (its
    memory to MPI), "host" (a CPU tensor: numpy views of its memory) or "staged" (copied)."""
    if direct and device in DIRECT_DEVICES and kind in DIRECT_KINDS and dtype in DTYPES:
        if not (kind in REDUCING and dtype in WIDENED):
            return "device"
    return "host" if device == "cpu" else "staged"


# -- tensors as MPI buffers -----------------------------------------------------------------
def is_direct(x: Any) -> bool:
    """A tensor whose memory goes to MPI as it is (the kernels check their items with this)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def np_dtype(t: Any) -> np.dtype:
    """The dtype MPI moves the tensor's memory as (bfloat16 bit for bit as int16)."""
    name = str(t.dtype)[6:]
    return np.dtype("int16" if name == "bfloat16" else name)


def buffer(t: Any) -> list:
    """The tensor as an mpi4py buffer with its datatype."""
    import torch

    return [t.view(torch.int16) if t.dtype == torch.bfloat16 else t, mpi_type(np_dtype(t))]


def sync(t: Any) -> None:
    """Finish the work queued on the tensor's CUDA stream before MPI reads or writes it."""
    if t.device.type == "cuda":
        import torch

        torch.cuda.current_stream(t.device).synchronize()


def copy_into(dst: Any, src: Any) -> Any:
    """Copy between any two of: numpy array, CPU tensor, device tensor; returns dst."""
    import torch

    torch.as_tensor(dst).copy_(torch.as_tensor(src))
    return dst


def fits(x: Any, shape: tuple, dtype: np.dtype) -> bool:
    """Whether a member's array or direct tensor can take a broadcast of this shape and dtype."""
    if isinstance(x, np.ndarray):
        return x.shape == shape and x.dtype == dtype
    return is_direct(x) and tuple(x.shape) == shape and np_dtype(x) == dtype


def allreduce(op: str, coll: Any, ec: Any, inst: Any, items: list, seq: int) -> list:
    """The allreduce kernel when a member on this rank passed a direct tensor; items: (x, out
    or None) per local member, numpy arrays from members on the host path, else tensors."""
    import torch

    x, out = items[0]
    like = next(t for t, _ in items if is_direct(t))
    if len(items) == 1 and is_direct(out) and out.is_contiguous():
        acc = out if out is x else out.copy_(x)
    else:
        acc = torch.as_tensor(x, device=like.device).clone()
        combine = getattr(torch, TORCH_OPS[op])
        for y, _ in items[1:]:
            combine(acc, torch.as_tensor(y, device=acc.device), out=acc)
    if ec.nranks > 1:
        key = ("allreduce", np_dtype(acc), tuple(acc.shape), op)
        comm = coll.comm_for(ec, key, [signature(key)], inst, seq)
        sync(acc)
        coll.mpi_wait(comm.Iallreduce(mpi().IN_PLACE, buffer(acc), mpi_op(op, np_dtype(acc))), ec, inst,
                      acc.nbytes, (acc,))
    if op == "mean":
        acc /= ec.size
    results: list = []
    given = any(o is acc for _, o in items)
    for y, o in items:
        if o is not None:
            results.append(o if o is acc else copy_into(o, acc))
        elif not is_direct(y):
            results.append(acc.detach().to("cpu", copy=True).numpy())
        elif given:
            results.append(acc.clone())
        else:
            results.append(acc)
            given = True
    sync(acc)
    return results
