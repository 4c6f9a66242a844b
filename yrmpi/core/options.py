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
        if self.name is not None and not isinstance(self.name, str):
            raise YRTypeError(f"InvokeOptions.name must be a str, got {self.name!r}")
        return self

    @property
    def detached(self) -> bool:
        return self.custom_extensions.get("lifecycle") == "detached"


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

    def resolved(self) -> Config:
        """A copy with every field filled from the environment or defaults, validated."""
        env_prefix = os.environ.get("YRMPI_PREFIX_OUTPUT")
        env_prefix_on = None if env_prefix is None else env_prefix not in ("0", "false", "no")
        out = Config(
            num_ranks=first_given(self.num_ranks, _env_int("YRMPI_NUM_RANKS"), 9),
            cpu_per_rank=first_given(self.cpu_per_rank, _env_int("YRMPI_CPU_PER_RANK"), 1000),
            memory_per_rank=first_given(self.memory_per_rank, _env_int("YRMPI_MEMORY_PER_RANK")),
            custom_resources=first_given(self.custom_resources, _env_resources("YRMPI_RESOURCES"), {}),
            placement=first_given(self.placement, os.environ.get("YRMPI_PLACEMENT") or None, "pack"),
            prefix_output=first_given(self.prefix_output, env_prefix_on, True),
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
        return out
