"""Pickling for the wire: protocol 5, large buffers out of band, classes of the driver script
by value.

The standard pickler is used when its output would load on any rank (fast: ~0.5 us for a call
tuple); cloudpickle otherwise, since other ranks never ran the driver script.

Torch tensors (once the process has imported torch) travel like numpy arrays: their bytes leave
the pickle out of band, through a dispatch table private to these picklers (`torch.save` and
every other pickler keep torch's own reduction; nothing is registered with copyreg).
"""

from __future__ import annotations

import copyreg
import io
import logging
import pickle
import sys
import threading
from collections import ChainMap
from collections.abc import Callable
from typing import Any

import cloudpickle

OOB_MIN_BYTES = 64 * 1024  # smaller buffers stay inside the pickle: one message is cheaper

# The modules registered with cloudpickle.register_pickle_by_value. The public accessor
# (list_registry_pickle_by_value) copies the set on every call, and this is read for every
# message sent, so the registry itself is read here.
_BY_VALUE = cloudpickle.cloudpickle._PICKLE_BY_VALUE_MODULES


def _needs_cloudpickle(data: bytes) -> bool:
    """A plain pickle that names __main__ (or a module registered to travel by value) would
    not load on another rank, which never ran the driver script."""
    if data.find(b"__main__") >= 0:  # (`find` is cheaper than `in` for short bytes)
        return True
    return bool(_BY_VALUE) and any(data.find(name.encode()) >= 0 for name in _BY_VALUE)


_session = threading.local()


def after_pickle(action: Callable[[], None]) -> None:
    """Run `action` once the message being pickled is final (a first attempt may be redone
    with cloudpickle, which calls the reducers again); at once outside `dumps`."""
    pending = getattr(_session, "actions", None)
    if pending is None:
        action()
    else:
        pending.append(action)


class Buffers(list):
    """Collects the large buffers a pickle leaves out of band (its `buffer_callback`)."""

    def __call__(self, pb: pickle.PickleBuffer) -> bool:
        if pb.raw().nbytes >= OOB_MIN_BYTES:
            self.append(pb)
            return False
        return True


# -- torch tensors ------------------------------------------------------------------------------
log = logging.getLogger("yrmpi")
_said: set[str] = set()  # what was reported once as taking a slow path
_table: dict = {}  # type -> reducer: the tensor reducers ahead of copyreg's table (a copy)
_table_for = -1  # len(copyreg.dispatch_table) when _table was built


def say_once(what: str, message: str, *args: Any) -> None:
    """One warning per kind of slow path (a type that must be pickled, a copy that must be made)."""
    if what not in _said:
        _said.add(what)
        log.warning(message, *args)


def _tensor_reducers() -> dict:
    """The dispatch table of the wire's picklers once torch is loaded: copyreg's, plus tensors.
    Rebuilt when copyreg's table grows (a copy, so that the C pickler looks types up in a dict)."""
    global _table, _table_for
    if _table_for != len(copyreg.dispatch_table):
        import torch

        table = dict(copyreg.dispatch_table)
        table[torch.Tensor] = reduce_tensor
        table[torch.nn.Parameter] = reduce_tensor
        _table, _table_for = table, len(copyreg.dispatch_table)
    return _table


def reduce_tensor(t: Any) -> tuple:
    """A dense tensor as (rebuild, (its bytes as a PickleBuffer, dtype, shape, ...)): the bytes
    go out of band when large, like a numpy array's. CUDA tensors are staged through host memory.
    Anything else (sparse, quantized, nested, a non-leaf that requires grad) takes torch's own
    reduction, which copies through torch.save, and says so once."""
    import torch

    if t.layout is not torch.strided or t.is_quantized or t.is_nested or t.is_meta or (
            t.requires_grad and not t.is_leaf):
        kind = "non-leaf tensor that requires grad" if t.layout is torch.strided and not (
            t.is_quantized or t.is_nested or t.is_meta) else f"{t.layout} tensor".replace("torch.", "")
        say_once(f"tensor:{kind}", "a %s is pickled by torch (copied, in band) instead of sent as a buffer", kind)
        return t.__reduce_ex__(5)
    data = t.detach()
    device = None
    if data.device.type != "cpu":
        device = str(data.device)
        data = data.cpu()
    if data.is_conj() or data.is_neg():
        data = data.resolve_conj().resolve_neg()
    if not data.is_contiguous():
        data = data.contiguous()
    raw = data.reshape(-1).view(torch.uint8).numpy() if data.numel() else bytearray()
    return (rebuild_tensor, (pickle.PickleBuffer(raw), str(data.dtype)[6:], tuple(data.shape), t.requires_grad,
                             device, type(t) is torch.nn.Parameter))


def rebuild_tensor(buf: Any, dtype: str, shape: tuple, requires_grad: bool, device: str | None,
                   parameter: bool) -> Any:
    """The receiving side of reduce_tensor: a tensor over the received buffer (no copy)."""
    import torch

    dt = getattr(torch, dtype)
    if isinstance(buf, bytes) or (isinstance(buf, memoryview) and buf.readonly):
        buf = bytearray(buf)  # (a read-only buffer makes torch warn: such a tensor must not be written)
    t = torch.frombuffer(buf, dtype=dt).reshape(shape) if len(memoryview(buf)) else torch.empty(shape, dtype=dt)
    if device is not None:
        if torch.cuda.is_available():
            t = t.to(torch.device("cuda", torch.cuda.current_device()))
        else:
            say_once("cuda-on-cpu", "a tensor sent from %s arrived on a rank without CUDA: it stays on the CPU", device)
    if parameter:
        return torch.nn.Parameter(t, requires_grad=requires_grad)
    if requires_grad:
        t.requires_grad_(True)
    return t


class _Reused(threading.local):
    """One pickler per thread, reused (building one per message would cost twice the pickling)."""

    def __init__(self) -> None:
        self.file = io.BytesIO()
        self.pickler = pickle.Pickler(self.file, protocol=5, buffer_callback=self.callback)
        self.table: dict | None = None
        self.buffers: Buffers | None = None
        self.busy = False

    def callback(self, pb: pickle.PickleBuffer) -> bool:
        return True if self.buffers is None else self.buffers(pb)


_reused = _Reused()


def _dumps_torch(obj: Any, buffers: Buffers | None) -> bytes:
    """pickle.dumps with the tensor reducers (only once torch is imported: see dumps)."""
    r = _reused
    table = _tensor_reducers()
    if r.busy:  # a reducer that pickles something itself: a pickler of its own
        f = io.BytesIO()
        p = pickle.Pickler(f, protocol=5, buffer_callback=buffers)
        p.dispatch_table = table
        p.dump(obj)
        return f.getvalue()
    if r.table is not table:
        r.pickler.dispatch_table = r.table = table
    r.busy, r.buffers = True, buffers
    f = r.file
    try:
        r.pickler.dump(obj)
        return f.getvalue()
    finally:
        r.busy, r.buffers = False, None
        r.pickler.clear_memo()
        f.seek(0)
        f.truncate()


_cloud_pickler: Any = None  # cloudpickle's Pickler with the tensor reducers (a subclass: its table is read at init)


def _cloudpickle_dumps(obj: Any, buffers: Buffers | None) -> bytes:
    global _cloud_pickler
    if sys.modules.get("torch") is None:
        return cloudpickle.dumps(obj, protocol=5, buffer_callback=buffers)
    if _cloud_pickler is None:
        import torch

        tensors = {torch.Tensor: reduce_tensor, torch.nn.Parameter: reduce_tensor}
        _cloud_pickler = type("TensorCloudPickler", (cloudpickle.Pickler,),
                              {"dispatch_table": ChainMap(tensors, cloudpickle.Pickler.dispatch_table)})
    f = io.BytesIO()
    _cloud_pickler(f, protocol=5, buffer_callback=buffers).dump(obj)
    return f.getvalue()


def dumps(obj: Any, buffers: Buffers | None = None) -> bytes:
    """Pickle with protocol 5: the standard pickler when its output loads anywhere (fast),
    else cloudpickle, which sends classes and functions of the driver script by value.
    With `buffers`, large buffers (numpy arrays) are left out of band and appended there.
    Side effects that reducers defer with `after_pickle` run once, on success."""
    outer = getattr(_session, "actions", None)
    _session.actions = actions = []
    try:
        try:
            if sys.modules.get("torch") is not None:  # tensors out of band (a process without torch has none)
                data = _dumps_torch(obj, buffers)
            else:
                data = pickle.dumps(obj, protocol=5, buffer_callback=buffers)
        except Exception:
            data = None
        if data is None or _needs_cloudpickle(data):
            if buffers:
                buffers.clear()
            _session.actions = actions = []  # the reducers run again
            data = _cloudpickle_dumps(obj, buffers)
    finally:
        _session.actions = outer
    for action in actions:
        after_pickle(action)
    return data


def loads(data: Any, buffers: list | None = None) -> Any:
    return pickle.loads(data, buffers=buffers)
