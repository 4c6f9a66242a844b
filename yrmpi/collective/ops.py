"""Reduction ops and dtypes: what MPI gets for a yr op and a numpy dtype, what it cannot take,
and the key and signature of one call (what the members must agree on)."""

from __future__ import annotations

import hashlib
import operator
from typing import Any

import numpy as np

OPS = ("sum", "mean", "max", "min", "prod")

UFUNCS = {"sum": np.add, "mean": np.add, "prod": np.multiply, "max": np.maximum, "min": np.minimum}
PYOPS = {"sum": operator.add, "mean": operator.add, "prod": operator.mul, "max": max, "min": min}

_mpi_module: Any = None
_mpi_ops: dict[tuple[str, str], Any] = {}
_problems: dict[tuple, str | None] = {}
_signatures: dict[tuple, int] = {}


def mpi() -> Any:
    """mpi4py's MPI module, imported on first use (importing yrmpi must not initialize MPI)."""
    global _mpi_module
    if _mpi_module is None:
        from mpi4py import MPI

        _mpi_module = MPI
    return _mpi_module


def mpi_op(op: str, dtype: np.dtype) -> Any:
    """The MPI op for a yr op on this dtype; bool max/min are the logical or/and."""
    found = _mpi_ops.get((op, dtype.kind))
    if found is None:
        MPI = mpi()
        if dtype.kind == "b":
            table = {"max": MPI.LOR, "min": MPI.LAND}
        else:
            table = {"sum": MPI.SUM, "mean": MPI.SUM, "prod": MPI.PROD, "max": MPI.MAX, "min": MPI.MIN}
        found = _mpi_ops[(op, dtype.kind)] = table.get(op)
    return found


def mpi_type(dtype: np.dtype) -> Any:
    MPI = mpi()
    found = MPI._typedict.get(dtype.char)
    if found is None:
        from mpi4py.util import dtlib

        found = MPI._typedict[dtype.char] = dtlib.from_numpy_dtype(dtype)
    return found


def op_problem(op: Any) -> str | None:
    """Why `op` is no yr op (None: it is one)."""
    return None if op in OPS else f"op must be one of {', '.join(OPS)}; got {op!r}"


def root_problem(root: Any) -> str | None:
    """Why `root` is no group rank (None: it is one)."""
    if isinstance(root, bool) or not isinstance(root, int) or root < 0:
        return f"root must be a group rank (int >= 0), got {root!r}"
    return None


def array_problem(x: np.ndarray, op: str | None) -> str | None:
    """Why this array cannot take part in a collective with this op (None: it can); cached."""
    if op is not None and not isinstance(op, str):
        return f"op must be one of {', '.join(OPS)}; got {op!r}"
    key = (x.dtype, op)
    try:
        return _problems[key]
    except KeyError:
        problem = _problems[key] = dtype_problem(x.dtype, op)
        return problem


def dtype_problem(dt: np.dtype, op: str | None) -> str | None:
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


def contiguous(x: np.ndarray) -> np.ndarray:
    return x if x.flags.c_contiguous else np.ascontiguousarray(x)


# -- what one call is (core.groups.describe_call describes it) --------------------------------
def array_key(kind: str, x: np.ndarray, op: str | None = None) -> tuple:
    """The key of a call on an array: (kind, dtype, shape[, op])."""
    return (kind, x.dtype, x.shape, op) if op is not None else (kind, x.dtype, x.shape)


def signature(key: tuple) -> int:
    """A 62-bit signature of a call key, equal in every process (unlike hash())."""
    sig = _signatures.get(key)
    if sig is None:
        digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
        sig = _signatures[key] = int.from_bytes(digest, "little") >> 2
    return sig
