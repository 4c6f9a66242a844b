"""The module functions of the yr API: init/finalize, get/wait/put/cancel, lookups."""

from __future__ import annotations

import atexit
import sys
import threading
from typing import Any

from .. import launch
from .. import runtime as _rt
from ..core.errors import InstanceExit, YRRuntimeError, YRTimeoutError, YRTypeError, YRValueError
from ..core.messages import Lookup, Resources, Shutdown
from ..core.options import Config
from ..core.refs import ObjectRef, as_ref_list, get, wait
from .handles import InstanceHandle

__all__ = ["cancel", "exit", "finalize", "get", "get_instance", "init", "is_initialized", "kill_instance", "put",
           "resources", "serve_until_shutdown", "wait"]

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
    hosts = [rank for rank in range(1, rt.size) if rank not in rt.failed_ranks()]
    for rank in hosts:
        rt.send(rank, Shutdown())
    rt.wait_for_byes(hosts, timeout=10)
    rt.stop()


def is_initialized() -> bool:
    return _rt.active() is not None


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
    items, _ = as_ref_list(refs, "yr.cancel")
    for ref in items:
        rt.caller.cancel(ref)


def get_instance(name: str, namespace: str = "", timeout: float = 60) -> InstanceHandle:
    """The handle of a named instance (created with InvokeOptions(name=...))."""
    rt = _rt.current()
    key = rt.new_id()
    reply = rt.request(Lookup(key, rt.rank, name, namespace or ""), key=key, timeout=timeout)
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
    usage = rt.request(Resources(key, rt.rank), key=key, timeout=60)
    if usage is _rt.TIMED_OUT:
        raise YRTimeoutError("yr.resources() got no answer from the scheduler in 60 s")
    return usage


def exit() -> None:  # noqa: A001 - the SDK's name
    """Inside an instance: end this instance (and the instances it owns)."""
    rt = _rt.current()
    if rt.current_instance() is None:
        raise YRRuntimeError("yr.exit() ends an instance; call it inside an instance method")
    raise InstanceExit()
