"""Ray Core on yrmpi: `import yrmpi.ray as ray` and a Ray program runs on MPI ranks.

A thin layer over yrmpi's own API (no second runtime): `@ray.remote` functions are
`@yr.invoke` functions, actors are `@yr.instance` classes, refs are yrmpi's refs, and errors come
back as Ray's (`ray.exceptions`). What differs from Ray, and what is out of scope, is in
docs/ray.md.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Callable

import yrmpi as yr
from yrmpi import ObjectRef
from yrmpi import launch as _launch
from yrmpi.core import rank as _rank
from yrmpi.core import refs as _core_refs

from . import _options, _state, exceptions, util
from ._scope import OUT_OF_SCOPE as _OUT_OF_SCOPE
from .actor import ActorClass, ActorHandle, ActorMethod, RemoteFunction, method
from .exceptions import GetTimeoutError, UnsupportedError, from_yrmpi
from .runtime_context import get_runtime_context

__all__ = [
    "ActorClass", "ActorHandle", "ObjectRef", "available_resources", "cancel", "cluster_resources", "exceptions",
    "get", "get_actor", "get_gpu_ids", "get_runtime_context", "init", "is_initialized", "kill", "method", "nodes",
    "put", "remote", "shutdown", "util", "wait",
]
__version__ = "2.60.0"  # the Ray version whose Core API this follows

log = logging.getLogger("yrmpi")

_INIT_IGNORED = ("object_store_memory", "local_mode", "include_dashboard", "dashboard_host", "dashboard_port",
                 "job_config", "configure_logging", "logging_format", "log_to_driver", "_temp_dir", "_system_config",
                 "_enable_object_reconstruction", "_plasma_directory", "_node_ip_address", "_metrics_export_port",
                 "storage", "labels", "_node_name", "_driver_object_store_memory")


class RayContext(dict):
    """What `ray.init` returns: the address information (a dict), and `.address_info`."""

    @property
    def address_info(self) -> dict:
        return dict(self)

    @property
    def dashboard_url(self) -> str:
        return ""

    def __enter__(self) -> RayContext:
        return self

    def __exit__(self, *exc: object) -> None:
        shutdown()

    def disconnect(self) -> None:
        shutdown()


def _hosts_for(num_cpus: float | None) -> int:
    """Host ranks: the launcher's (under one), else what `ray.init` launches: YRMPI_NUM_RANKS, or one
    rank per CPU asked for (at most 8 on a small machine), else yrmpi's default."""
    if _launch.under_mpi():
        from mpi4py import MPI

        return MPI.COMM_WORLD.Get_size() - 1
    if os.environ.get("YRMPI_NUM_RANKS"):
        return int(os.environ["YRMPI_NUM_RANKS"]) - 1
    if num_cpus:
        return max(1, min(int(math.ceil(num_cpus)), max(8, os.cpu_count() or 1)))
    return 8


def init(address: str | None = None, *, num_cpus: float | None = None, num_gpus: float | None = None,
         resources: dict | None = None, namespace: str | None = None, ignore_reinit_error: bool = False,
         runtime_env: dict | None = None, logging_level: Any = None, **kwargs: Any) -> RayContext:
    """Start the job's runtime, as `yr.init()` does: under a launcher (`python -m yrmpi`, `yrmpi run`,
    `srun`/`mpiexec`) on its ranks, otherwise by launching the script itself.

    num_cpus: the job's CPUs, shared out over the host ranks (at least one whole CPU per rank);
    resources: custom resources, shared out the same way (rounded up per rank); num_gpus: GPUs
    are found on the nodes (docs/torch.md), a different count is logged."""
    if yr.is_initialized():
        if ignore_reinit_error:
            log.info("Calling ray.init() again after it has already been called.")
            return RayContext(_address_info())
        raise RuntimeError("Maybe you called ray.init twice by accident? This error can be suppressed by passing "
                           "in 'ignore_reinit_error=True' or by calling 'ray.shutdown()' prior to 'ray.init()'.")
    if isinstance(address, str) and address.startswith("ray://"):
        raise UnsupportedError("Ray Client (ray://) is not supported by yrmpi.ray: run the driver inside the job "
                               "(python -m yrmpi job.py, or srun ... python -m yrmpi job.py), see docs/ray.md")
    if address not in (None, "auto", "local"):
        log.warning("ray.init(address=%r): yrmpi.ray has no cluster to connect to; the job runs on its own "
                    "MPI ranks", address)
    unknown = [k for k in kwargs if k not in _INIT_IGNORED]
    if unknown:
        raise TypeError(f"init() got an unexpected keyword argument {unknown[0]!r}")
    given = sorted(k for k in kwargs if kwargs[k] is not None)
    if given:
        log.info("ray.init: %s accepted and ignored by yrmpi.ray", ", ".join(given))
    if namespace is not None and not isinstance(namespace, str):
        raise TypeError(f"namespace must be None or a string, got {type(namespace).__name__}")
    conf = yr.Config()
    hosts = _hosts_for(num_cpus)
    if not _launch.under_mpi():
        conf.num_ranks = hosts + 1
    if num_cpus is not None:
        if isinstance(num_cpus, bool) or not isinstance(num_cpus, (int, float)) or num_cpus < 0:
            raise ValueError(f"num_cpus must be a non-negative number, got {num_cpus!r}")
        conf.cpu_per_rank = max(1000, int(math.ceil(num_cpus * 1000 / hosts)))
        if num_cpus < hosts:
            log.info("ray.init(num_cpus=%s): the job has %d host ranks of one CPU each", num_cpus, hosts)
    if resources:
        for key in resources:
            if key in ("CPU", "GPU"):
                raise ValueError("Use the 'num_cpus' and 'num_gpus' keyword instead of 'CPU' and 'GPU' in "
                                 "'resources' keyword")
        conf.custom_resources = {str(k): float(math.ceil(float(v) / hosts)) for k, v in resources.items()}
    if num_gpus:
        log.info("ray.init(num_gpus=%s): yrmpi finds the nodes' GPUs itself and gives each host rank its share",
                 num_gpus)
    if logging_level is not None:
        conf.log_level = logging_level
    conf.custom_envs = _options.runtime_env_vars(runtime_env)
    yr.init(conf)  # (without a launcher this re-runs the script under mpiexec and exits)
    _state.set_namespace(namespace or "")
    return RayContext(_address_info())


def _address_info() -> dict:
    return {"node_ip_address": yr.get_node_ip_address(), "address": "", "session_dir": "",
            "job_id": get_runtime_context().get_job_id()}


def shutdown(_exiting_interpreter: bool = False) -> None:
    """End every actor and task and release the ranks (`yr.finalize()`); `ray.init` may follow."""
    yr.finalize()


def is_initialized() -> bool:
    return yr.is_initialized()


def remote(*args: Any, **kwargs: Any) -> Any:
    """`@ray.remote` or `@ray.remote(num_cpus=..., ...)` on a function or a class."""
    if len(args) == 1 and not kwargs and callable(args[0]):
        return _make(args[0], {})
    if args:
        raise TypeError("The @ray.remote decorator must be applied either with no arguments and no parentheses, "
                        "for example '@ray.remote', or it must be applied using some of the arguments in the list "
                        "['max_calls', 'max_restarts', 'max_task_retries', 'max_retries', 'memory', 'num_cpus', "
                        "'num_gpus', 'num_returns', 'resources', 'runtime_env', 'scheduling_strategy'], for "
                        "example '@ray.remote(num_returns=2, resources={\"CustomResource\": 1})'.")
    return lambda target: _make(target, kwargs)


def _make(target: Any, options: dict) -> Any:
    if isinstance(target, type):
        return ActorClass(target, options)
    if callable(target):
        return RemoteFunction(target, options)
    raise TypeError("The @ray.remote decorator must be applied to either a function or a class.")


def _refs(object_refs: Any, what: str) -> tuple[list, bool]:
    if isinstance(object_refs, ObjectRef):
        return [object_refs], True
    if isinstance(object_refs, (list, tuple)) and all(isinstance(r, ObjectRef) for r in object_refs):
        return list(object_refs), False
    raise ValueError(f"'object_refs' must either be an ObjectRef or a list of ObjectRefs, got {type(object_refs)} "
                     f"(in ray.{what})")


def get(object_refs: Any, *, timeout: float | None = None) -> Any:
    """The value of a ref or the values of a list of refs; a task's exception is raised as a
    RayTaskError that is also of its class; `timeout` (s) runs out with GetTimeoutError."""
    if timeout is None and type(object_refs) is ObjectRef:  # the common case, kept short
        try:
            return yr.get(object_refs, -1)
        except BaseException as exc:
            raise _ray_error(exc) from None
    _state.ensure_initialized()
    refs, single = _refs(object_refs, "get")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        if timeout == 0:
            ready, _ = yr.wait(refs, len(refs), 0.000001) if refs else ([], [])
            if len(ready) < len(refs):
                raise GetTimeoutError("Get timed out: some object(s) not ready.")
            timeout = 1e-3
    try:
        values = yr.get(refs, -1 if timeout is None else timeout) if refs else []
    except BaseException as exc:
        raise _ray_error(exc) from None
    return values[0] if single else values


def _ray_error(exc: BaseException) -> BaseException:
    converted = from_yrmpi(exc)
    if converted is not exc and isinstance(converted, exceptions.RayActorError):
        converted.__cause__ = exc
    return converted


_core_refs.view_errors_as(_ray_error)  # `await ref` in a Ray program (an async actor's) raises Ray's classes too


def wait(object_refs: list, *, num_returns: int = 1, timeout: float | None = None,
         fetch_local: bool = True) -> tuple[list, list]:
    """(ready, not ready): once `num_returns` refs are done or at the timeout (s, None: forever);
    at most `num_returns` come back ready. A ref that failed counts as ready."""
    if isinstance(object_refs, ObjectRef):
        raise TypeError("wait() expected a list of ray.ObjectRef, got a single ray.ObjectRef")
    if not isinstance(object_refs, (list, tuple)):
        raise TypeError(f"wait() expected a list of ray.ObjectRef, got {type(object_refs)}")
    refs = list(object_refs)
    for r in refs:
        if not isinstance(r, ObjectRef):
            raise TypeError(f"wait() expected a list of ray.ObjectRef, got list containing {type(r)}")
    if len({id(r) for r in refs}) != len(refs):
        raise ValueError("Wait requires a list of unique object refs.")
    if isinstance(num_returns, bool) or not isinstance(num_returns, int) or num_returns <= 0:
        raise ValueError(f"Invalid number of objects to return {num_returns}.")
    if num_returns > len(refs):
        raise ValueError("num_returns cannot be greater than the number of objects provided to ray.wait.")
    if timeout is not None and timeout < 0:
        raise ValueError(f"The 'timeout' argument must be nonnegative. Received {timeout}")
    _state.ensure_initialized()
    return yr.wait(refs, num_returns, timeout)


def put(value: Any, *, _owner: Any = None) -> ObjectRef:
    """Store a value in the object store of this rank; its ref can go to any task or actor."""
    _state.ensure_initialized()
    if isinstance(value, ObjectRef):
        raise TypeError("Calling 'put' on an ray.ObjectRef is not allowed. If you really want to do this, "
                        "you can wrap the ray.ObjectRef in a list and call 'put' on it.")
    if value is None:  # yr.put refuses None, Ray stores it: put it in this rank's store directly
        return _rank.current().objects.put(None)
    return yr.put(value)


def kill(actor: Any, *, no_restart: bool = True) -> None:
    """End an actor at once (its queued calls fail with RayActorError), and the actors it owns."""
    if not isinstance(actor, ActorHandle):
        raise ValueError(f"ray.kill() only supported for actors. For tasks, try ray.cancel(). Got: {type(actor)}.")
    if not no_restart:  # it comes back if max_restarts allows, as in Ray; its calls in flight fail
        _rank.current().caller.restart(actor._inner._state, "killed by ray.kill(no_restart=False)")
        return
    yr.kill_instance(actor._inner)


def cancel(ref: ObjectRef, *, force: bool = False, recursive: bool = True) -> None:
    """Cancel a task (ray.get of its ref raises TaskCancelledError); actor method calls are not
    cancelled (docs/ray.md)."""
    if not isinstance(ref, ObjectRef):
        raise TypeError(f"ray.cancel() only supported for object refs. For actors, try ray.kill(). Got: {type(ref)}.")
    yr.cancel(ref)


def get_actor(name: str, namespace: str | None = None) -> ActorHandle:
    """The handle of the live actor created with `.options(name=name)` (in this job's namespace,
    or `namespace`)."""
    if not isinstance(name, str) or not name:
        raise ValueError("Please supply a non-empty value to get_actor")
    if namespace is not None and not isinstance(namespace, str):
        raise TypeError(f"namespace must be None or a string, got {type(namespace).__name__}")
    _state.ensure_initialized()
    ns = _state.namespace() if namespace is None else namespace
    try:
        inner = yr.get_instance(name, ns)
    except (yr.YRRuntimeError, TimeoutError) as exc:
        raise ValueError(f"Failed to look up actor with name '{name}'. This could because 1. You are trying to "
                         "look up a named actor you didn't create. 2. The named actor died. 3. You did not use a "
                         f"namespace matching the namespace of the actor. ({exc})") from None
    return ActorHandle(inner)


# -- the cluster --------------------------------------------------------------------------------
def _resources_of(rows: list[dict], used: bool) -> dict[str, float]:
    out: dict[str, float] = {}
    for row in rows:
        if not row["alive"]:
            continue
        cpu = row["cpu_total"] - (row["cpu_used"] if used else 0)
        mem = row["memory_total"] - (row["memory_used"] if used else 0)
        out["CPU"] = out.get("CPU", 0.0) + cpu / 1000
        out["memory"] = out.get("memory", 0.0) + float(mem) * 2**20
        for key, amount in row["custom_total"].items():
            left = amount - (row["custom_used"].get(key, 0.0) if used else 0.0)
            name = "GPU" if key == "gpu" else key
            out[name] = out.get(name, 0.0) + float(left)
    return out


def _usage() -> dict:
    _state.ensure_initialized()
    return yr.resources().usage


def nodes() -> list[dict]:
    """One dict per node, as Ray gives them (NodeID, Alive, NodeManagerAddress, Resources, ...)."""
    by_node: dict[str, list[dict]] = {}
    for row in _usage()["ranks"]:
        by_node.setdefault(row["node"], []).append(row)
    out = []
    for node, rows in by_node.items():
        host = node.rsplit("#", 1)[0]
        alive = any(r["alive"] for r in rows)
        res = _resources_of(rows, used=False)
        res[f"node:{host}"] = 1.0
        out.append({"NodeID": node, "Alive": alive, "NodeManagerAddress": host, "NodeManagerHostname": host,
                    "NodeName": host, "Resources": res, "alive": alive,
                    "Labels": {"ranks": ",".join(str(r["rank"]) for r in rows)}})
    return out


def cluster_resources() -> dict[str, float]:
    """The job's resources in Ray's units: CPU (whole CPUs), memory (bytes), GPU, custom."""
    return _resources_of(_usage()["ranks"], used=False)


def available_resources() -> dict[str, float]:
    """What is not reserved by running tasks and actors, in Ray's units."""
    return {k: v for k, v in _resources_of(_usage()["ranks"], used=True).items() if v > 0}


def get_gpu_ids() -> list[str]:
    return get_runtime_context().get_accelerator_ids()["GPU"]


# -- out of scope: a clear error that names the alternative --------------------------------------


def __getattr__(name: str) -> Callable:
    if name in _OUT_OF_SCOPE:
        raise UnsupportedError(f"ray.{name}: {_OUT_OF_SCOPE[name]} (see docs/ray.md)")
    raise AttributeError(f"module 'yrmpi.ray' has no attribute {name!r}")


_unused = (ActorMethod,)  # importable from here, as in Ray (ray.actor.ActorMethod)
