"""Torch tensors in the collectives: each call goes to the numpy path on views of the tensors'
memory, and its result comes back as a tensor.

- CPU tensors whose dtype numpy has (float16/32/64, ints, uint8, bool, complex) are viewed,
  not copied: `out=` receives in place, a non-root's tensor is filled by `broadcast`. The view
  of a tensor is cached while the tensor lives, so a training loop that passes the same
  tensors keeps the allreduce fast path (and its persistent MPI request).
- bfloat16 and float16 are reduced in float32 (one rounding at the end, not one per step of
  the reduction) and converted back; bfloat16 moves bit for bit as int16 where no arithmetic
  is done (broadcast, allgather).
- CUDA tensors go to MPI as they are when the MPI library is CUDA-aware (allreduce and
  broadcast; collective/device.py decides, once per process); otherwise they are staged
  through host memory (copied to the CPU, reduced there, copied back).
- Anything else (sparse, quantized, nested tensors) takes the pickled path, which says so once.

Nothing here imports torch: it is used only when the caller passed a tensor, so torch is loaded.
"""

from __future__ import annotations

import functools
import sys
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from ..core.log import log
from . import device
from .algorithms import allreduce_arrays, broadcast_value
from .calls import run
from .ops import dtype_problem, op_problem, root_problem

_VIEWS_MAX = 256
_views: dict[int, tuple[Any, int, tuple, np.ndarray]] = {}  # id(tensor) -> (weakref, data_ptr, shape, view)
_said: set[str] = set()
WIDEN = ("bfloat16", "float16")  # reduced in float32


def say_once(what: str, message: str, *args: Any) -> None:
    if what not in _said:
        _said.add(what)
        log.warning(message, *args)


def is_tensor(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _name(t: Any) -> str:
    return str(t.dtype)[6:]


def plain(t: Any) -> bool:
    """A dense tensor the collectives can take as a buffer (after staging, for CUDA)."""
    import torch

    return t.layout is torch.strided and not t.is_quantized and not t.is_nested and not t.is_meta


def path(t: Any, kind: str) -> str:
    """How a tensor takes part in collective `kind`: "pickled" (not dense), "host" (a CPU
    tensor, through numpy views of its memory), "device" (its memory to MPI) or "staged"."""
    if not plain(t):
        return "pickled"
    where, name = t.device.type, _name(t)
    how = device.route(where, name, kind, where in device.DIRECT_DEVICES and device.decision().direct)
    if how == "staged" and where in device.DIRECT_DEVICES and device.decision().direct:
        say_once(f"staged:{kind}:{name}", "yr.collective.%s: %s tensors on the GPU are staged through host memory: "
                 "only allreduce and broadcast go to MPI directly, and not reductions of bfloat16/float16 "
                 "(reduced in float32 on the host)", kind, name)
    return how


def _staged(t: Any) -> Any:
    """A CPU tensor with the contents of `t` (itself when it is on the CPU already)."""
    if t.device.type == "cpu":
        return t
    if t.device.type not in device.DIRECT_DEVICES:  # (CUDA's path was logged by device.decision)
        say_once(f"staged:{t.device.type}", "yr.collective: tensors on %s are staged through host memory",
                 t.device.type)
    return t.detach().cpu()


def view(t: Any, bitwise: bool = False) -> np.ndarray:
    """A numpy array over the tensor's memory (a copy only when it must be: CUDA, not contiguous,
    or bf16/fp16 widened to float32 for arithmetic; bitwise: bf16 as int16, for no arithmetic)."""
    import torch

    name = _name(t)
    if name in WIDEN and not bitwise:
        return _staged(t).detach().float().numpy()
    cpu = _staged(t)
    if cpu is t and t.is_contiguous() and not t.is_conj() and not t.is_neg():
        key = id(t)
        cached = _views.get(key)
        ptr = t.data_ptr()
        if cached is not None and cached[0]() is t and cached[1] == ptr and cached[2] == tuple(t.shape):
            return cached[3]
        arr = (t.detach().view(torch.int16) if name == "bfloat16" else t.detach()).numpy()
        if len(_views) >= _VIEWS_MAX:
            _views.pop(next(iter(_views)))
        _views[key] = (weakref.ref(t), ptr, tuple(t.shape), arr)
        return arr
    cpu = cpu.detach().resolve_conj().resolve_neg().contiguous()
    return (cpu.view(torch.int16) if name == "bfloat16" else cpu).numpy()


def shares(t: Any, arr: np.ndarray) -> bool:
    """Whether `arr` is the tensor's own memory (results landed in place)."""
    return t.device.type == "cpu" and arr.size == t.numel() and arr.ctypes.data == t.data_ptr()


def to_tensor(arr: Any, like: Any, bitwise: bool = False) -> Any:
    """A tensor of `like`'s dtype and device holding `arr` (no copy for CPU, numpy dtypes)."""
    import torch

    if not isinstance(arr, np.ndarray):
        return arr
    t = torch.from_numpy(arr)
    name = _name(like)
    if name == "bfloat16":
        t = t.view(torch.bfloat16) if arr.dtype == np.int16 else t.to(torch.bfloat16)
    elif t.dtype != like.dtype:
        t = t.to(like.dtype)
    return t if like.device.type == "cpu" else t.to(like.device)


def into(out: Any, arr: np.ndarray) -> Any:
    """Put a result into the tensor `out` (unless it is there already); returns `out`."""
    if not shares(out, arr):
        out.copy_(to_tensor(arr, out).reshape(out.shape))
    return out


def pickled(what: str, t: Any) -> None:
    say_once(f"pickled:{t.layout}", "yr.collective.%s: a %s tensor is pickled (gathered and combined as objects), "
             "not sent as a buffer", what, str(t.layout).replace("torch.", ""))


# -- the calls ----------------------------------------------------------------------------------
def allreduce(call: Callable[..., Any], x: Any, op: Any, group: Any, out: Any) -> Any:
    """`call` is the numpy allreduce; `x` is a dense tensor. Returns a tensor: `out` itself when
    it is given."""
    if path(x, "allreduce") == "device":
        return direct_allreduce(x, op, group, out)
    a = view(x)
    if out is None:
        return to_tensor(call(a, op, group, None), x)
    if not is_tensor(out):
        return call(a, op, group, out)  # a numpy out for a tensor: the numpy path checks it
    if out is not x and (tuple(out.shape) != tuple(x.shape) or out.dtype != x.dtype or not plain(out)):
        # let the numpy path report it (and fail the others' call rather than leave them waiting)
        bad = np.empty(tuple(out.shape) if tuple(out.shape) != tuple(x.shape) else (0,), dtype=a.dtype)
        return call(a, op, group, bad)
    o = a if out is x else view(out)
    if o is not a and o.ctypes.data == a.ctypes.data:
        o = a  # the same memory through two tensor objects: in place
    return into(out, call(a, op, group, o))


def direct_allreduce(x: Any, op: Any, group: Any, out: Any) -> Any:
    """allreduce of a tensor whose memory goes to MPI; `out` and in place as for CPU tensors."""
    dt = device.np_dtype(x)
    problem = op_problem(op) or dtype_problem(dt, op)
    if problem is None and out is not None and not (
            is_tensor(out) and tuple(out.shape) == tuple(x.shape) and out.dtype == x.dtype and plain(out)):
        problem = f"out must be a tensor of shape {list(x.shape)} and dtype {str(x.dtype)[6:]}"
    for t in (x, out):
        if is_tensor(t):
            device.sync(t)
    key = ("allreduce", dt, tuple(x.shape), op)
    return run("allreduce", group, key, (x.contiguous(), out), problem, functools.partial(allreduce_arrays, op))


def allgather(call: Callable[..., Any], x: Any, group: Any) -> Any:
    path(x, "allgather")  # never "device": called so that a CUDA tensor logs its path once
    return to_tensor(call(view(x, bitwise=True), group), x, bitwise=True)


def reduce_scatter(call: Callable[..., Any], x: Any, op: Any, group: Any) -> Any:
    path(x, "reduce_scatter")  # never "device": called so that a CUDA tensor logs its path once
    return to_tensor(call(view(x), op, group), x)


def broadcast(call: Callable[..., Any], x: Any, root: Any, group: Any) -> Any:
    """The root's tensor on every member; a member's own tensor is filled in place."""
    if path(x, "broadcast") == "device":
        device.sync(x)
        return run("broadcast", group, ("broadcast", root), x, root_problem(root),
                   functools.partial(broadcast_value, root))
    a = view(x, bitwise=True)
    tagged = a.view(TensorView)
    tagged.torch_dtype = _name(x)
    res = call(tagged, root, group)
    if isinstance(res, np.ndarray):
        if res is tagged or shares(x, res):
            return x
        return into(x, res)
    return res


class TensorView(np.ndarray):
    """A numpy view of a tensor's memory that remembers the tensor's dtype (the broadcast
    header carries it, so that members that passed None get a tensor of that dtype back)."""

    torch_dtype: str | None = None

    def __array_finalize__(self, obj: Any) -> None:
        self.torch_dtype = getattr(obj, "torch_dtype", None)
