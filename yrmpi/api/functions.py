"""The module functions of the yr API: init/finalize, get/wait/put/cancel, lookups."""

from __future__ import annotations

import atexit
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from .. import launch
from .. import runtime as _rt
from ..core.errors import YRRuntimeError, YRTimeoutError, YRTypeError, YRValueError
from ..core.options import Config
from ..core.refs import ObjectRef, Slot
from ..roles.host import InstanceExit
from .handles import InstanceHandle

_init_lock = threading.Lock()


def init(conf: Config | None = None) -> None:
    """Start the runtime. On rank 0 this returns and the script drives; on other ranks it serves
    until the job ends and then exits the process. Without a launcher it launches the job."""
    if conf is not None and not isinstance(conf, Config):
        raise YRTypeError(f"yr.init takes a yr.Config, got {type(conf).__name__}")
    with _init_lock:
        if _rt.active() is not None:
            raise RuntimeError("yr.init() was already called in this process")
        if _rt.ever_started():
            raise RuntimeError("yr.init() after yr.finalize(): MPI cannot start twice in one process")
        if not launch.under_mpi():
            sys.exit(launch.relaunch_self(conf))
        from mpi4py import MPI

        _rt.require_hosts(MPI.COMM_WORLD)
        rt = _rt.Runtime(MPI.COMM_WORLD, conf)
        rt.start()
    if rt.rank != 0:
        serve_until_shutdown(rt)
        sys.exit(0)
    rt.progress.count_as_user()
    atexit.register(finalize)


def serve_until_shutdown(rt: _rt.Runtime) -> None:
    """A host rank's life: serve instances until the driver says the job is over."""
    while not rt.stopped.wait(0.5):
        pass
    rt.stop()


def finalize() -> None:
    """End every instance, tell the host ranks the job is over; no-op when not initialised."""
    rt = _rt.active()
    if rt is None or rt.rank != 0:
        return
    rt.scheduler.end_all("the job is finishing (yr.finalize)")
    hosts = [rank for rank in range(1, rt.size) if rank not in rt.wire.failed]
    for rank in hosts:
        rt.send(rank, ("shutdown",))
    rt.wait_for_byes(hosts, timeout=10)
    rt.stop()


def is_initialized() -> bool:
    return _rt.active() is not None


def _deadline(timeout: float | None, allow_forever: tuple = (-1, None)) -> float | None:
    if timeout in allow_forever:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise YRTypeError(f"timeout must be a number of seconds, got {timeout!r}")
    if timeout <= 0:
        raise YRValueError(f"timeout must be > 0 seconds, or -1 to wait forever; got {timeout}")
    return time.monotonic() + timeout


def _as_ref_list(refs: Any, what: str) -> tuple[list[ObjectRef], bool]:
    single = isinstance(refs, ObjectRef)
    items = [refs] if single else refs
    if not isinstance(items, (list, tuple)):
        raise YRTypeError(f"{what} takes an ObjectRef or a list of them, got {type(refs).__name__}")
    for ref in items:
        if not isinstance(ref, ObjectRef):
            raise YRTypeError(f"{what} takes ObjectRefs, got {type(ref).__name__}: {ref!r}")
    return list(items), single


def wait_slot(slot: Slot, deadline: float | None) -> bool:
    """Wait (polling) until one slot is done; False at the deadline (a monotonic time)."""
    return slot.done() or _rt.current().wait(slot.done, lambda wake: slot.add_callback(lambda _s: wake()), deadline)


def _wait_refs(refs: list[ObjectRef], count: int, deadline: float | None) -> None:
    rt = _rt.current()
    for ref in refs:
        rt.objects.ensure_fetch(ref)
    remaining = [count - sum(1 for r in refs if r._slot.done())]
    if remaining[0] <= 0:
        return
    wake: list[Callable[[], None]] = []

    def one_done(_slot: Slot) -> None:
        remaining[0] -= 1
        if remaining[0] <= 0 and wake:
            wake[0]()

    for ref in refs:
        if not ref._slot.done():
            ref._slot.add_callback(one_done)
    rt.wait(lambda: remaining[0] <= 0, wake.append, deadline)


def get(refs: ObjectRef | list[ObjectRef], timeout: float = 300, allow_partial: bool = False) -> Any:
    """The value of one ref, or a list of values; waits up to `timeout` seconds (-1: forever)."""
    rt = _rt.current()
    if type(refs) is ObjectRef:  # the common `yr.get(ref)`, kept short: it is on every synchronous call
        deadline = _deadline(timeout)
        rt.objects.ensure_fetch(refs)
        slot = refs._slot
        if not slot.done() and not wait_slot(slot, deadline):
            if allow_partial:
                return []
            raise YRTimeoutError(f"yr.get timed out after {timeout} s: {refs!r} is not ready")
        return slot.result()
    items, single = _as_ref_list(refs, "yr.get")
    deadline = _deadline(timeout)
    _wait_refs(items, len(items), deadline)
    pending = [r for r in items if not r._slot.done()]
    if pending and not allow_partial:
        raise YRTimeoutError(f"yr.get timed out after {timeout} s: {len(pending)} of {len(items)} "
                             f"refs not ready (first: {pending[0]!r})")
    values = [r._slot.result() for r in items if r._slot.done()]
    return values[0] if single and values else values


def wait(refs: ObjectRef | list[ObjectRef], wait_num: int | None = None,
         timeout: float | None = None) -> tuple[list[ObjectRef], list[ObjectRef]]:
    """(ready, unready) once `wait_num` refs are done (errors count as done) or at the timeout."""
    _rt.current()
    items, _ = _as_ref_list(refs, "yr.wait")
    if len({id(r) for r in items}) != len(items) or len({r.id for r in items}) != len(items):
        raise YRValueError("yr.wait got the same ObjectRef twice; pass each ref once")
    count = len(items) if wait_num is None else wait_num
    if not isinstance(count, int) or not 0 <= count <= len(items):
        raise YRValueError(f"wait_num must be in 0..{len(items)}, got {wait_num!r}")
    deadline = _deadline(timeout, allow_forever=(None, -1))
    _wait_refs(items, count, deadline)
    ready = [r for r in items if r._slot.done()]
    unready = [r for r in items if not r._slot.done()]
    return ready, unready


def put(obj: Any) -> ObjectRef:
    """Store a value in this rank's object store; the ref can be passed to calls anywhere."""
    rt = _rt.current()
    if obj is None:
        raise YRValueError("yr.put(None) is not allowed: pass a value")
    if isinstance(obj, ObjectRef):
        raise YRTypeError("yr.put takes a value, not an ObjectRef")
    return rt.objects.put(obj)


def cancel(refs: ObjectRef | list[ObjectRef], allow_force: bool = True, allow_recursive: bool = False) -> None:
    """Cancel stateless calls that have not started yet."""
    rt = _rt.current()
    items, _ = _as_ref_list(refs, "yr.cancel")
    for ref in items:
        rt.caller.cancel(ref)


def get_instance(name: str, namespace: str = "", timeout: float = 60) -> InstanceHandle:
    """The handle of a named instance (created with InvokeOptions(name=...))."""
    rt = _rt.current()
    key = rt.new_id()
    reply = rt.request(("lookup", key, rt.rank, name, namespace or ""), key=key, timeout=timeout)
    if reply is _rt.TIMED_OUT:
        raise YRTimeoutError(f"yr.get_instance({name!r}) timed out after {timeout} s")
    if reply is None:
        raise YRRuntimeError(f"no instance named {name!r} in namespace {namespace!r}")
    iid, cls_name, rank, methods = reply
    return InstanceHandle(rt.caller.known_instance(iid, cls_name, methods or {}, rank))


def kill_instance(instance_id: str | InstanceHandle) -> None:
    """End an instance by id (synchronously), with everything it owns."""
    rt = _rt.current()
    if isinstance(instance_id, InstanceHandle):
        instance_id = instance_id.instance_id
    try:
        iid = int(str(instance_id), 16)
    except ValueError:
        raise YRValueError(f"not an instance id: {instance_id!r}") from None
    state = rt.caller.instances.get(iid) or rt.caller.known_instance(iid, "instance", {}, None)
    rt.caller.terminate(state, "killed by yr.kill_instance", graceful=False, sync=True)


def resources() -> dict:
    """Capacity per host rank and in total: cpu (millicores), memory (MB), custom; used and free."""
    rt = _rt.current()
    key = rt.new_id()
    usage = rt.request(("resources", key, rt.rank), key=key, timeout=60)
    if usage is _rt.TIMED_OUT:
        raise YRTimeoutError("yr.resources() got no answer from the scheduler in 60 s")
    return usage


def exit() -> None:  # noqa: A001 - the SDK's name
    """Inside an instance: end this instance (and the instances it owns)."""
    rt = _rt.current()
    if getattr(rt.context, "instance", None) is None:
        raise YRRuntimeError("yr.exit() ends an instance; call it inside an instance method")
    raise InstanceExit()
