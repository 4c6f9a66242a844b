"""The module functions of the yr API: init/finalize, get/wait/put/cancel, lookups."""

from __future__ import annotations

import atexit
import logging
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from .. import launch
from .. import runtime as _rt
from ..core.errors import InstanceExit, YRRuntimeError, YRTimeoutError, YRTypeError, YRValueError
from ..core.log import log
from ..core.messages import ListNames, Lookup, Resources, Shutdown
from ..core.options import Config
from ..core.refs import ObjectRef, as_ref_list, deadline_of, first_failure, slot_of
from ..core.refs import get as _get_refs
from ..core.refs import wait as _wait_refs
from .handles import InstanceHandle

__all__ = ["ClientInfo", "cancel", "exit", "finalize", "get", "get_instance", "get_node_ip_address", "init",
           "is_initialized", "kill_instance", "list_named_instances", "put", "resources", "serve_rounds",
           "serve_until_shutdown", "wait"]

_init_lock = threading.Lock()
_ROUND_TAG = 32701  # rank 0 -> hosts on COMM_WORLD after a finalize: another init (1) or the end (0)
_rounds = {"hosts": None, "ended": False, "exit_hook": False}


@dataclass
class ClientInfo:
    """What `yr.init()` returns, as in the SDK: the job's id."""

    job_id: str


def init(conf: Config | None = None) -> ClientInfo:
    """Start the runtime. On rank 0 this returns and the script drives; on other ranks it serves
    until the job ends and then exits the process. Without a launcher it launches the job.
    `init` -> `finalize` -> `init` in one process starts a new runtime on the same MPI."""
    if conf is not None and not isinstance(conf, Config):
        raise YRTypeError(f"yr.init takes a yr.Config, got {type(conf).__name__}")
    with _init_lock:
        if _rt.active() is not None:
            raise RuntimeError("yr.init cannot be called twice: yr.init() was already called in this process")
        if not launch.under_mpi():
            sys.exit(launch.relaunch_self(conf))
        from mpi4py import MPI

        world = MPI.COMM_WORLD
        _rt.require_hosts(world)
        if _rt.ever_started():  # after a finalize: the hosts wait for word of another round
            if world.Get_rank() != 0:
                raise RuntimeError("yr.init() after yr.finalize() runs in the driver only")
            _announce_round(world, again=True)
        elif conf is not None:
            _apply_log_level(conf)
        rt = _rt.Runtime(world, conf)
        rt.start()
    if rt.rank != 0:
        serve_rounds(world, first=rt)
        sys.exit(0)
    if conf is not None:
        _apply_log_level(conf)
        ignored = conf.ignored_fields()
        if ignored:
            log.warning("yr.Config: %s mean nothing on MPI ranks (no cluster services): accepted and ignored",
                        ", ".join(ignored))
        if conf.custom_envs:
            rt.settings["custom_envs"] = {str(k): str(v) for k, v in conf.custom_envs.items()}
    # Rank labels for affinity (rank 0): the Slurm features of each node, then the user's (which win).
    rt.settings["labels"] = {**launch.slurm_node_labels(), **(conf or Config()).resolved().labels}
    rt.progress.count_as_user()
    if not _rounds["exit_hook"]:
        _rounds["exit_hook"] = True
        atexit.register(end_rounds)  # (atexit runs in reverse: finalize first, then this)
        atexit.register(finalize)
    return ClientInfo(rt.settings["job_id"])


def _apply_log_level(conf: Config) -> None:
    level = conf.log_level
    if level in ("", None):
        return
    if isinstance(level, str):
        resolved = logging.getLevelName(level.upper())
        if not isinstance(resolved, int):
            raise YRValueError(f"Config.log_level must be ERROR, WARNING, INFO or DEBUG, got {level!r}")
        level = resolved
    logging.getLogger("yrmpi").setLevel(level)


def serve_until_shutdown(rt: _rt.Runtime) -> None:
    """A host rank's life: serve instances until the driver says the job is over."""
    while not rt.stopped.wait(0.5):
        pass
    rt.stop()


def serve_rounds(world: Any, first: _rt.Runtime | None = None) -> None:
    """A host rank's whole life: serve one runtime, then, after the driver's finalize, wait for
    its word: another `init` (a new runtime on the same MPI) or the end of the job."""
    rt = first
    while True:
        if rt is None:
            rt = _rt.Runtime(world, None)
            rt.start()
        serve_until_shutdown(rt)
        rt = None
        if not _next_round(world):
            return


def _next_round(world: Any) -> bool:
    req = world.irecv(source=0, tag=_ROUND_TAG)
    while True:
        done, again = req.test()
        if done:
            return bool(again)
        time.sleep(0.02)


def _announce_round(world: Any, again: bool) -> None:
    hosts = _rounds["hosts"]
    if hosts is None or _rounds["ended"]:
        if again:
            raise RuntimeError("yr.init() after the job ended")
        return
    if again and len(hosts) != world.Get_size() - 1:
        raise RuntimeError("yr.init() after yr.finalize(): some host ranks died, a new runtime cannot start")
    if not again:
        _rounds["ended"] = True
    for req in [world.isend(1 if again else 0, dest=rank, tag=_ROUND_TAG) for rank in hosts]:
        req.wait()


def end_rounds() -> None:
    """Rank 0, once the driver is done: the hosts waiting after a finalize may end."""
    from mpi4py import MPI

    if _rt.active() is None and _rounds["hosts"] is not None:
        _announce_round(MPI.COMM_WORLD, again=False)


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
    _rounds["hosts"] = hosts


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


def get(refs: ObjectRef | list[ObjectRef], timeout: float = 300, allow_partial: bool = False) -> Any:
    """The value of one ref, or a list of values; waits up to `timeout` seconds (-1: forever).
    `allow_partial=True`: the refs not ready at the timeout give None, in their positions."""
    if not allow_partial:
        return _get_refs(refs, timeout)
    items, single = as_ref_list(refs, "yr.get")
    deadline_of(timeout)  # (checked as without allow_partial)
    _wait_refs(items, len(items), None if timeout == -1 else timeout)
    first_failure(items)
    values = [slot_of(r).value if slot_of(r).done() else None for r in items]
    return values[0] if single else values


def wait(refs: ObjectRef | list[ObjectRef], wait_num: int | None = 1,
         timeout: float | None = None) -> tuple[list[ObjectRef], list[ObjectRef]]:
    """(ready, unready): at most `wait_num` ready refs (default 1, as in the SDK; errors count as
    ready), once that many are done or at the timeout (None or -1: forever); each list in input order."""
    items, _ = as_ref_list(refs, "yr.wait")
    count = 1 if wait_num is None else wait_num
    if isinstance(count, bool) or not isinstance(count, int):
        raise YRTypeError(f"wait_num must be an int, got {wait_num!r}")
    if count == 0 or timeout == 0:
        if len({r.id for r in items}) != len(items):
            raise YRValueError("yr.wait got the same ObjectRef twice; pass each ref once")
        return [], list(items)
    ready, unready = _wait_refs(items, count, timeout)
    if len(ready) <= count:
        return ready, unready
    keep = {id(r) for r in ready[:count]}
    return [r for r in items if id(r) in keep], [r for r in items if id(r) not in keep]


def _full_name(name: str, namespace: str) -> str:
    return f"{namespace}-{name}" if namespace else name


def get_instance(name: str, namespace: str = "", timeout: float = 60) -> InstanceHandle:
    """The handle of a named instance (created with InvokeOptions(name=...)), once its
    constructor has run: waits up to `timeout` seconds for that (TimeoutError)."""
    if not isinstance(name, str):
        raise YRTypeError(f"invalid name type: {type(name)}, should be a str")
    if namespace and not isinstance(namespace, str):
        raise YRTypeError(f"invalid namespace type: {type(namespace)}, should be a str")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
        raise YRTypeError("The timeout value needs to be greater than 0")
    rt = _rt.current()
    full = _full_name(name, namespace)
    start = time.monotonic()
    key = rt.new_id()
    reply = rt.request(Lookup(key, rt.rank, name, namespace or ""), key=key, timeout=timeout or None)
    if reply is _rt.TIMED_OUT:
        raise YRTimeoutError(f"failed to get instance: {full} by name, no answer in {timeout} s")
    if reply is None:
        raise YRRuntimeError(f"failed to get instance: {full} by name, instance {full!r} not found "
                             f"(no instance named {name!r} in namespace {namespace!r})")
    iid, cls_name, rank, methods = reply
    handle = InstanceHandle(rt.caller.known_instance(iid, cls_name, methods or {}, rank))
    # Ready once its constructor has run: a no-op call queues behind the constructor.
    ping = rt.caller.call(handle._state, "__sizeof__", (), {}, 1)[0]
    left = timeout - (time.monotonic() - start) if timeout else -1
    try:
        _get_refs(ping, max(left, 0.001) if timeout else -1)
    except YRTimeoutError:
        raise YRTimeoutError(f"failed to get instance: {full} by name, its constructor did not finish "
                             f"in {timeout} s") from None
    except BaseException as exc:
        raise YRRuntimeError(f"failed to get instance: {full} by name, {exc}") from exc
    return handle


def list_named_instances(all_namespaces: bool = False) -> list[str]:
    """Names of the live named instances: of the default namespace, or of all (as "ns-name")."""
    rt = _rt.current()
    key = rt.new_id()
    reply = rt.request(ListNames(key, rt.rank, bool(all_namespaces)), key=key, timeout=60)
    if reply is _rt.TIMED_OUT:
        raise YRTimeoutError("yr.list_named_instances() got no answer from the scheduler in 60 s")
    return sorted(_full_name(name, ns) for ns, name in reply)


def get_node_ip_address() -> str:
    """This node's IP address (the one a connection to the outside would use)."""
    _rt.current()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))  # (no packet is sent: it only picks the route)
            return s.getsockname()[0]
    except OSError:
        try:
            return socket.gethostbyname(socket.gethostname())
        except OSError:
            return "127.0.0.1"


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


class ResourceList(list):
    """What `yr.resources()` returns: the SDK's list of nodes (`{id, capacity, allocatable,
    status}`), which also answers yrmpi's richer view by key: `r["ranks"]`, `r["total"]`."""

    def __init__(self, usage: dict) -> None:
        super().__init__(_sdk_nodes(usage))
        self.usage = usage

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return self.usage[key]
        return super().__getitem__(key)

    def keys(self) -> Any:
        return self.usage.keys()

    def get(self, key: str, default: Any = None) -> Any:
        return self.usage.get(key, default)


def _sdk_nodes(usage: dict) -> list[dict]:
    nodes: dict[str, dict] = {}
    for row in usage["ranks"]:
        node = nodes.setdefault(row["node"], {"id": row["node"], "status": 0, "capacity": {}, "allocatable": {}})
        if not row["alive"]:
            continue
        totals = {"CPU": row["cpu_total"], "Memory": row["memory_total"], **row["custom_total"]}
        used = {"CPU": row["cpu_used"], "Memory": row["memory_used"], **row["custom_used"]}
        for name, amount in totals.items():
            node["capacity"][name] = node["capacity"].get(name, 0.0) + float(amount)
            node["allocatable"][name] = node["allocatable"].get(name, 0.0) + float(amount - used.get(name, 0))
    return list(nodes.values())


def resources() -> ResourceList:
    """The SDK's list of nodes with their capacity and what is still allocatable; by key, yrmpi's
    view per host rank and in total (cpu in millicores, memory in MB, custom; used)."""
    rt = _rt.current()
    key = rt.new_id()
    usage = rt.request(Resources(key, rt.rank), key=key, timeout=60)
    if usage is _rt.TIMED_OUT:
        raise YRTimeoutError("yr.resources() got no answer from the scheduler in 60 s")
    return ResourceList(usage)


def exit() -> None:  # noqa: A001 - the SDK's name
    """Inside an instance: end this instance (and the instances it owns)."""
    rt = _rt.current()
    if rt.current_instance() is None:
        raise YRRuntimeError("yr.exit() ends an instance; call it inside an instance method")
    raise InstanceExit()
