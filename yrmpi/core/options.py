"""InvokeOptions (per creation / call) and Config (per job), validated where the user calls.

Both are plain mutable dataclasses, as in the yr SDK (`opt = InvokeOptions(); opt.cpu = 1000`);
`validated()` checks ranges at the call site so a bad value fails where it was written.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
from dataclasses import dataclass, field
from typing import Any

from .errors import YRTypeError, YRValueError
from .log import log

PLACEMENT_POLICIES = ("pack", "spread")


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise YRValueError(message)


def _reject_unknown(cls: type, kwargs: dict[str, Any]) -> None:
    names = [f.name for f in dataclasses.fields(cls)]
    for key in kwargs:
        if key not in names:
            hint = difflib.get_close_matches(key, names, n=1)
            extra = f"; did you mean {hint[0]!r}?" if hint else f"; valid: {', '.join(names)}"
            raise YRTypeError(f"{cls.__name__} has no option {key!r}{extra}")


@dataclass
class ResourceGroupOptions:
    """Place an instance inside a resource group (`yr.create_resource_group`): any bundle with room
    (`bundle_index=-1`) or that one."""

    resource_group_name: str = ""
    bundle_index: int = -1


@dataclass
class GroupOptions:
    """A `yr.Group`: `timeout` (s, -1 forever) for its members to be up at `wait`; `same_lifecycle`:
    one member's end ends them all; `strategy`: "PACK" (as few nodes as possible) or "SPREAD"
    (across nodes) for every member; "" leaves each member's own placement."""

    timeout: int = -1
    same_lifecycle: bool = True
    strategy: str = ""


@dataclass
class FunctionGroupOptions:
    """`yr.fcc.create_function_group`'s options (cpu, memory, resources per member; timeout in s)."""

    cpu: int | None = None
    memory: int | None = None
    resources: dict[str, float] = field(default_factory=dict)
    scheduling_affinity_type: Any = None
    scheduling_affinity_each_bundle_size: int | None = None
    timeout: int | None = None
    concurrency: int | None = None
    recover_retry_times: int = 0


@dataclass
class InvokeOptions:
    """Resources and behaviour of one creation or call (units as in the yr SDK)."""

    cpu: int = 500  # millicores; 1000 = one core
    memory: int = 500  # MB
    concurrency: int = 1  # calls an instance runs at once; 1 = one at a time, in order
    name: str | None = None
    namespace: str = ""
    get_if_exists: bool = False
    recover_retry_times: int = 0  # restarts of a failed stateful instance
    retry_times: int = 0  # retries of a failed stateless call
    custom_resources: dict[str, float] = field(default_factory=dict)
    schedule_timeout_ms: int = 30000  # how long a creation may wait for room; -1 forever
    custom_extensions: dict[str, str] = field(default_factory=dict)
    env_vars: dict[str, str] = field(default_factory=dict)  # set while the instance's code runs
    schedule_affinities: list = field(default_factory=list)  # yr.Affinity conditions on rank labels
    resource_group_options: ResourceGroupOptions = field(default_factory=ResourceGroupOptions)
    group_name: str = ""  # a yr.Group's members are created together, at Group.invoke()
    # The SDK's other fields: accepted (so yr code runs), ignored with one warning each (see
    # docs/api.md "yr API -> yrmpi" for why each means nothing on MPI ranks).
    pod_labels: dict[str, str] = field(default_factory=dict)
    labels: list = field(default_factory=list)
    affinity: dict[str, str] = field(default_factory=dict)
    device: Any = None
    max_invoke_latency: int = 5000
    min_instances: int = 0
    max_instances: int = 0
    need_order: bool = False
    is_data_affinity: bool = False
    preferred_priority: bool = True
    required_priority: bool = False
    preferred_anti_other_labels: bool = False
    function_group_options: FunctionGroupOptions = field(default_factory=FunctionGroupOptions)
    trace_id: str = ""
    alias_params: dict[str, str] = field(default_factory=dict)
    runtime_env: dict = field(default_factory=dict)
    preempted_allowed: bool = False
    instance_priority: int = 0
    is_delete_remote_tensor: bool = False

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in _INVOKE_FIELDS:  # `opt.env_var = ...` (a typo) must not be silently lost
            _reject_unknown(InvokeOptions, {name: value})
        object.__setattr__(self, name, value)

    @classmethod
    def build(cls, **kwargs: Any) -> InvokeOptions:
        _reject_unknown(cls, kwargs)
        return cls(**kwargs)

    def validated(self) -> InvokeOptions:
        """Raise YRValueError naming the bad field and the valid range; return self."""
        for name in ("cpu", "memory", "concurrency", "recover_retry_times", "retry_times",
                     "schedule_timeout_ms"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise YRTypeError(f"InvokeOptions.{name} must be an int, got {value!r}")
        _check(self.cpu >= 0, f"InvokeOptions.cpu must be >= 0 millicores, got {self.cpu}")
        _check(self.memory >= 0, f"InvokeOptions.memory must be >= 0 MB, got {self.memory}")
        _check(1 <= self.concurrency <= 1000,
               f"InvokeOptions.concurrency must be in 1..1000, got {self.concurrency}")
        _check(self.recover_retry_times >= 0,
               f"InvokeOptions.recover_retry_times must be >= 0, got {self.recover_retry_times}")
        _check(self.retry_times >= 0, f"InvokeOptions.retry_times must be >= 0, got {self.retry_times}")
        _check(self.schedule_timeout_ms >= -1,
               f"InvokeOptions.schedule_timeout_ms must be >= 0 or -1 (forever), "
               f"got {self.schedule_timeout_ms}")
        if not isinstance(self.custom_resources, dict):
            raise YRTypeError("InvokeOptions.custom_resources must be a dict of name -> amount")
        for key, amount in self.custom_resources.items():
            _check(isinstance(amount, (int, float)) and amount >= 0,
                   f"InvokeOptions.custom_resources[{key!r}] must be a number >= 0, got {amount!r}")
        lifecycle = self.custom_extensions.get("lifecycle")
        _check(lifecycle in (None, "detached"),
               f"custom_extensions['lifecycle'] must be 'detached', got {lifecycle!r}")
        policy = self.custom_extensions.get("placement", "pack")
        _check(policy in PLACEMENT_POLICIES,
               f"custom_extensions['placement'] must be one of {PLACEMENT_POLICIES}, got {policy!r}")
        limit = self.custom_extensions.get("async_limit", "0")
        _check(isinstance(limit, str) and limit.isdigit() and int(limit) <= 1000,
               f"custom_extensions['async_limit'] must be a whole number 0..1000 as a str (0: no cap), got {limit!r}")
        if self.name is not None and not isinstance(self.name, str):
            raise YRTypeError(f"InvokeOptions.name must be a str, got {self.name!r}")
        if self.name == "":  # the SDK's default: no name
            object.__setattr__(self, "name", None)
        if not isinstance(self.env_vars, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in self.env_vars.items()):
            raise YRTypeError(f"InvokeOptions.env_vars must be a dict of str -> str, got {self.env_vars!r}")
        if not isinstance(self.schedule_affinities, (list, tuple)):
            raise YRTypeError("InvokeOptions.schedule_affinities must be a list of yr.Affinity")
        return self

    def warn_ignored(self) -> None:
        """One warning per SDK field that was set and that yrmpi ignores (when options are attached)."""
        for name in _IGNORED_INVOKE_FIELDS:
            if getattr(self, name) != _INVOKE_DEFAULTS[name]:
                _warn_once(f"InvokeOptions.{name}", "means nothing on MPI ranks: accepted and ignored")

    @property
    def detached(self) -> bool:
        return self.custom_extensions.get("lifecycle") == "detached"


_INVOKE_FIELDS = frozenset(f.name for f in dataclasses.fields(InvokeOptions))
_IGNORED_INVOKE_FIELDS = (
    "pod_labels", "labels", "affinity", "device", "max_invoke_latency", "min_instances", "max_instances",
    "need_order", "is_data_affinity", "preferred_priority", "required_priority", "preferred_anti_other_labels",
    "trace_id", "alias_params", "runtime_env", "preempted_allowed", "instance_priority",
    "is_delete_remote_tensor", "function_group_options",
)
_INVOKE_DEFAULTS = {f.name: getattr(InvokeOptions(), f.name) for f in dataclasses.fields(InvokeOptions)}
_warned: set[str] = set()


def _warn_once(what: str, why: str) -> None:
    if what not in _warned:
        _warned.add(what)
        log.warning("%s %s", what, why)


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except ValueError:
        raise YRValueError(f"environment variable {name} must be an integer, got {raw!r}") from None


def _env_resources(name: str) -> dict[str, float] | None:
    raw = os.environ.get(name)
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise YRValueError(f'environment variable {name} must be a JSON object like {{"gpu": 1}}, got {raw!r}')
    return value


def first_given(*values: Any) -> Any:
    """The first value that was given (not None): explicit, then environment, then default."""
    return next((v for v in values if v is not None), None)


@dataclass
class Config:
    """Per-job settings. Fields left as None take the environment variable, then the default.

    num_ranks        ranks when `yr.init()` launches the job itself (YRMPI_NUM_RANKS; default 9)
    cpu_per_rank     millicores each host rank offers (YRMPI_CPU_PER_RANK; default 1000)
    memory_per_rank  MB each host rank offers (YRMPI_MEMORY_PER_RANK; default: node memory / ranks)
    custom_resources per-rank custom capacity (YRMPI_RESOURCES, JSON; default none)
    placement        "pack" (default) or "spread" (YRMPI_PLACEMENT)
    prefix_output    prefix instance output with class and rank (YRMPI_PREFIX_OUTPUT=0 turns off)
    """

    num_ranks: int | None = None
    cpu_per_rank: int | None = None
    memory_per_rank: int | None = None
    custom_resources: dict[str, float] | None = None
    placement: str | None = None
    prefix_output: bool | None = None
    labels: dict[str, str] | None = None  # user labels of every host rank (YRMPI_LABELS, JSON), for affinity
    # The SDK's fields. Honoured: log_level (the `yrmpi` logger's level), custom_envs (set in every
    # instance's environment while its code runs), local_mode (the job runs on this machine's ranks
    # anyway). The others name a cluster service yrmpi does not have: accepted, one warning names them.
    log_level: str | int = ""
    custom_envs: dict[str, str] = field(default_factory=dict)
    local_mode: bool = False
    function_id: str = ""
    cpp_function_id: str = ""
    cpp_auto_function_name: str = ""
    function_name: str = ""
    server_address: str = ""
    ds_address: str = ""
    is_driver: bool = True
    invoke_timeout: int = 900
    code_dir: str = ""
    connection_nums: int = 100
    recycle_time: int = 2
    in_cluster: bool = True
    job_id: str = ""
    tls_config: Any = None
    auto: bool = False
    deployment_config: Any = None
    rt_server_address: str = ""
    log_dir: str = "./"
    log_file_size_max: int = 0
    log_file_num_max: int = 0
    log_flush_interval: int = 5
    runtime_id: str = "driver"
    max_task_instance_num: int = -1
    load_paths: list = field(default_factory=list)
    rpc_timeout: int = 30 * 60
    enable_mtls: bool = False
    private_key_path: str = ""
    certificate_file_path: str = ""
    verify_file_path: str = ""
    private_key_paaswd: str = ""
    http_ioc_threads_num: int = 400
    server_name: str = ""
    ns: str = ""
    tenant_id: str = ""
    enable_metrics: bool = True
    master_addr_list: list = field(default_factory=list)
    working_dir: str = ""
    enable_ds_encrypt: bool = False
    ds_public_key_path: str = ""
    runtime_public_key_path: str = ""
    runtime_private_key_path: str = ""
    num_cpus: int | None = None
    runtime_env: dict | None = None
    log_to_driver: bool = False
    dedup_logs: bool = True
    auth_token: str = ""
    enable_tls: bool = False

    def ignored_fields(self) -> list[str]:
        """The SDK fields set to something else than their default, which yrmpi ignores."""
        defaults = Config()
        return [f.name for f in dataclasses.fields(self)
                if f.name not in _HONOURED_CONFIG and getattr(self, f.name) != getattr(defaults, f.name)]

    def resolved(self) -> Config:
        """A copy with every field filled from the environment or defaults, validated."""
        env_prefix = os.environ.get("YRMPI_PREFIX_OUTPUT")
        env_prefix_on = None if env_prefix is None else env_prefix not in ("0", "false", "no")
        out = dataclasses.replace(
            self,
            num_ranks=first_given(self.num_ranks, _env_int("YRMPI_NUM_RANKS"), 9),
            cpu_per_rank=first_given(self.cpu_per_rank, _env_int("YRMPI_CPU_PER_RANK"), 1000),
            memory_per_rank=first_given(self.memory_per_rank, _env_int("YRMPI_MEMORY_PER_RANK")),
            custom_resources=first_given(self.custom_resources, _env_resources("YRMPI_RESOURCES"), {}),
            placement=first_given(self.placement, os.environ.get("YRMPI_PLACEMENT") or None, "pack"),
            prefix_output=first_given(self.prefix_output, env_prefix_on, True),
            labels=first_given(self.labels, _env_resources("YRMPI_LABELS"), {}),
        )
        _check(out.num_ranks >= 2, f"Config.num_ranks must be >= 2 (a driver and a host), got {out.num_ranks}")
        _check(out.cpu_per_rank >= 0, f"Config.cpu_per_rank must be >= 0, got {out.cpu_per_rank}")
        _check(out.memory_per_rank is None or out.memory_per_rank >= 0,
               f"Config.memory_per_rank must be >= 0 MB, got {out.memory_per_rank}")
        for key, amount in out.custom_resources.items():
            _check(isinstance(amount, (int, float)) and amount >= 0,
                   f"custom resource {key!r} must be a number >= 0 per rank, got {amount!r}")
        _check(out.placement in PLACEMENT_POLICIES,
               f"Config.placement must be one of {PLACEMENT_POLICIES}, got {out.placement!r}")
        if not isinstance(out.custom_envs, dict):
            raise YRTypeError(f"Config.custom_envs must be a dict of str -> str, got {out.custom_envs!r}")
        if not isinstance(out.labels, dict):
            raise YRTypeError(f"Config.labels must be a dict of str -> str, got {out.labels!r}")
        return out


_HONOURED_CONFIG = frozenset({
    "num_ranks", "cpu_per_rank", "memory_per_rank", "custom_resources", "placement", "prefix_output", "labels",
    "log_level", "custom_envs", "local_mode", "is_driver", "runtime_id", "job_id",
})
