"""Ray's `.options(...)` / `@ray.remote(...)` keywords, checked as Ray checks them and mapped onto
`yr.InvokeOptions`: whole CPUs onto millicores, bytes onto MB, `num_gpus` onto the `gpu` custom
resource, `lifetime="detached"`, `max_restarts` onto `recover_retry_times`, `max_retries` onto
`retry_times` with Ray's retry policy (`retry_if`), SPREAD/DEFAULT onto yrmpi's spread/pack
placement."""

from __future__ import annotations

import math
import os
from typing import Any

import yrmpi as yr
from yrmpi.roles.caller import RetryIf

from .exceptions import UnsupportedError

_COMMON = {"num_cpus", "num_gpus", "memory", "resources", "accelerator_type", "runtime_env",
           "scheduling_strategy", "name", "namespace", "label_selector", "_metadata", "object_store_memory",
           "enable_task_events", "_labels", "fallback_strategy"}
TASK_OPTIONS = _COMMON | {"num_returns", "max_retries", "retry_exceptions", "max_calls", "concurrency_groups"}
ACTOR_OPTIONS = _COMMON | {"lifetime", "get_if_exists", "max_restarts", "max_task_retries", "max_concurrency",
                           "max_pending_calls", "concurrency_groups", "allow_out_of_order_execution"}
METHOD_OPTIONS = {"num_returns", "concurrency_group", "max_task_retries", "retry_exceptions", "name",
                  "enable_task_events", "_generator_backpressure_num_objects", "tensor_transport"}
INFINITE_RESTARTS = 1 << 20  # max_restarts=-1: as many as there are ranks to restart on
INFINITE_RETRIES = 1 << 20  # max_retries=-1
DEFAULT_TASK_MAX_RETRIES = 3  # Ray's: a task whose process dies runs again up to 3 times

_OUT_OF_SCOPE_ENV = ("pip", "conda", "uv", "container", "image_uri", "working_dir", "py_modules",
                     "py_executable", "java_jars")


def check(kind: str, options: dict, valid: set) -> None:
    for key in options:
        if key not in valid:
            raise ValueError(f"Invalid option keyword {key} for {kind}. Valid ones are {sorted(valid)}.")


def num_returns(value: Any) -> int:
    if value in ("dynamic", "streaming"):
        raise UnsupportedError(f"num_returns={value!r} (generator tasks) is not supported by yrmpi.ray: "
                               "return a list, or use several num_returns")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"The keyword 'num_returns' only accepts None, a non-negative integer, "
                         f"'streaming' (for generators), or 'dynamic', got {value!r}")
    return value


def _amount(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"The keyword '{name}' only accepts a non-negative number, got {value!r}")
    return float(value)


def runtime_env_vars(runtime_env: Any) -> dict[str, str]:
    """The `env_vars` of a runtime_env; the provisioning fields are out of scope."""
    if not runtime_env:
        return {}
    if not isinstance(runtime_env, dict):
        runtime_env = dict(runtime_env)
    bad = [k for k in runtime_env if k in _OUT_OF_SCOPE_ENV]
    if bad:
        raise UnsupportedError(
            f"runtime_env {', '.join(repr(k) for k in bad)} is out of scope in yrmpi.ray: the ranks run the job's "
            "own Python environment; install the packages into it (pip install ... in the venv on every node) "
            "and put the code on a shared path (see docs/ray.md)")
    env = runtime_env.get("env_vars") or {}
    return {str(k): str(v) for k, v in env.items()}


def to_invoke_options(options: dict, actor: bool, namespace: str = "") -> yr.InvokeOptions:
    """The yr.InvokeOptions for Ray options of a task (actor=False) or an actor class."""
    opts = yr.InvokeOptions()
    default_cpus = 0.0 if actor else 1.0  # Ray: an actor holds no CPU while it runs, a task one
    cpus = options.get("num_cpus")
    opts.cpu = int(round(1000 * (default_cpus if cpus is None else _amount("num_cpus", cpus))))
    memory = options.get("memory")
    opts.memory = 0 if memory is None else int(math.ceil(_amount("memory", memory) / 2**20))
    custom: dict[str, float] = {}
    for key, amount in (options.get("resources") or {}).items():
        if key in ("CPU", "GPU"):
            raise ValueError("Use the 'num_cpus' and 'num_gpus' keyword instead of 'CPU' and 'GPU' in "
                             "'resources' keyword")
        custom[str(key)] = _amount(f"resources[{key!r}]", amount)
    gpus = options.get("num_gpus")
    if gpus:
        custom["gpu"] = _amount("num_gpus", gpus)
    opts.custom_resources = custom
    extensions: dict[str, str] = {}
    strategy = options.get("scheduling_strategy")
    if strategy is not None:
        extensions.update(_strategy(strategy, opts))
    opts.env_vars = runtime_env_vars(options.get("runtime_env"))
    if actor:
        name = options.get("name")
        if name is not None:
            if not isinstance(name, str) or not name:
                raise ValueError(f"name must be None or a non-empty string, got {name!r}")
            opts.name = name
            ns = options.get("namespace")
            opts.namespace = namespace if ns is None else str(ns)
        elif options.get("get_if_exists"):
            raise ValueError("The actor name must be specified to use `get_if_exists`.")
        lifetime = options.get("lifetime")
        if lifetime == "detached":
            extensions["lifecycle"] = "detached"
        elif lifetime not in (None, "non_detached"):
            raise ValueError("actor `lifetime` argument must be one of 'detached', 'non_detached' and 'None'.")
        opts.get_if_exists = bool(options.get("get_if_exists", False))
        restarts = options.get("max_restarts") or 0
        if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < -1:
            raise ValueError(f"The keyword 'max_restarts' only accepts -1, 0 or a positive integer, got {restarts!r}")
        opts.recover_retry_times = INFINITE_RESTARTS if restarts == -1 else restarts
        concurrency = options.get("max_concurrency")
        if concurrency is not None:
            if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
                raise ValueError(f"max_concurrency must be a positive integer, got {concurrency!r}")
            opts.concurrency = min(concurrency, 1000)
        extensions["async_limit"] = str(min(concurrency or 1000, 1000))  # async actors: Ray's default 1000
    else:
        retries = max_retries(options)  # how many times; which failures: retry_if
        opts.retry_times = INFINITE_RETRIES if retries == -1 else retries
    opts.custom_extensions = extensions
    return opts


def max_retries(options: dict) -> int:
    """A task's `max_retries`: Ray's default 3 (or RAY_TASK_MAX_RETRIES), -1 for unlimited."""
    value = options.get("max_retries")
    if value is None:
        value = int(os.environ.get("RAY_TASK_MAX_RETRIES", DEFAULT_TASK_MAX_RETRIES))
    if isinstance(value, bool) or not isinstance(value, int) or value < -1:
        raise ValueError("The keyword 'max_retries' only accepts None, 0, -1 or a positive integer, "
                         "where -1 represents infinity.")
    return value


def retry_if(options: dict) -> RetryIf:
    """Ray's retry policy for a task: it runs again when its process died, and after the user's
    exception only under `retry_exceptions` (True: any; a list of classes: those)."""
    which = options.get("retry_exceptions", False)
    if isinstance(which, (list, tuple)) and all(isinstance(c, type) and issubclass(c, Exception) for c in which):
        which = tuple(which)
    elif not isinstance(which, bool):
        raise ValueError("retry_exceptions must be either a boolean or a list of exceptions")

    def retried(error: BaseException) -> bool:
        if getattr(error, "rank_died", False):
            return True
        if not isinstance(error, yr.YRInvokeError) or which is False:
            return False
        return which is True or isinstance(error.cause if error.cause is not None else error, which)

    return retried


def _strategy(strategy: Any, opts: yr.InvokeOptions) -> dict[str, str]:
    if strategy == "SPREAD":
        return {"placement": "spread"}
    if strategy == "DEFAULT":
        return {"placement": "pack"}
    node_id = getattr(strategy, "node_id", None)
    if node_id is not None:  # NodeAffinitySchedulingStrategy: the rank labels name the node
        kind = yr.AffinityType.PREFERRED if getattr(strategy, "soft", False) else yr.AffinityType.REQUIRED
        op = yr.LabelOperator(yr.OperatorType.LABEL_IN, "node", [str(node_id)])
        opts.schedule_affinities = [yr.Affinity(yr.AffinityKind.RESOURCE, kind, [op])]
        return {}
    if getattr(strategy, "placement_group", None) is not None or isinstance(strategy, str):
        raise UnsupportedError(
            f"scheduling_strategy={strategy!r} is not supported by yrmpi.ray: use 'SPREAD' or 'DEFAULT', "
            "NodeAffinitySchedulingStrategy, or yrmpi's resource groups (yr.create_resource_group) for bundles")
    raise ValueError(f"Invalid scheduling_strategy {strategy!r}")
