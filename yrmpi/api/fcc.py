"""`yr.fcc`: function groups, the yr way of saying "a group of workers with ranks".

`create_function_group(Cls_or_fn, args, group_size, options)` creates `group_size` members at
once. They are one of yrmpi's communicator groups (docs/collectives.md: the members of one
creation of one owner), so `yr.collective.allreduce(...)` and friends work inside them over an
MPI sub-communicator of their ranks, and `get_function_group_context()` gives each its rank id
and the world size. For a class, the result is a `FunctionGroupHandler`
(`handler.method.invoke(...)`: one call per member, a list of refs; `handler[i]`: member i's
handle; `handler.terminate()`); for a function, the list of refs of its `group_size` runs.
"""

from __future__ import annotations

import copy
import itertools
import os
from dataclasses import dataclass, field
from typing import Any

from .. import runtime as _rt
from ..core.errors import YRRuntimeError, YRValueError
from ..core.messages import RgRemove
from ..core.options import FunctionGroupOptions, InvokeOptions, ResourceGroupOptions
from ..core.refs import ObjectRef
from .groups import create_resource_group
from .handles import FunctionProxy, InstanceCreator, InstanceHandle, _check_options, _owner

__all__ = ["FunctionGroupContext", "FunctionGroupHandler", "FunctionGroupMethodProxy", "FunctionGroupOptions",
           "create_function_group", "get_function_group_context"]

MAX_GROUP_SIZE = 256
_names = itertools.count(1)
CONTEXT_ATTR = "__yr_function_group__"  # set on each member: (rank_id, world_size, group)
ENV_RANK, ENV_SIZE = "YRMPI_FCC_RANK_ID", "YRMPI_FCC_WORLD_SIZE"  # the same, while its constructor runs


@dataclass
class FunctionGroupContext:
    rank_id: int = 0
    world_size: int = 0
    server_list: list = field(default_factory=list)
    device_name: str = ""


class _GroupTask:
    """A function group's member for a stateless function: runs it once."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def run(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)


class FunctionGroupMethodProxy:
    def __init__(self, handles: list[InstanceHandle], name: str) -> None:
        self._handles = handles
        self._name = name

    def invoke(self, *args: Any, **kwargs: Any) -> list[Any]:
        """The method on every member, in rank order: one ref (or list of refs) each."""
        return [getattr(h, self._name).invoke(*args, **kwargs) for h in self._handles]

    def options(self, opts: InvokeOptions) -> FunctionGroupMethodProxy:
        _check_options(opts)
        return self


class FunctionGroupHandler:
    def __init__(self, handles: list[InstanceHandle]) -> None:
        self._handles = handles

    def __getattr__(self, name: str) -> FunctionGroupMethodProxy:
        if name.startswith("__"):
            raise AttributeError(name)
        getattr(self._handles[0], name)  # an unknown method raises AttributeError, listing the methods
        return FunctionGroupMethodProxy(self._handles, name)

    def __getitem__(self, index: int) -> InstanceHandle:
        return self._handles[index]

    def __len__(self) -> int:
        return len(self._handles)

    @property
    def handles(self) -> list[InstanceHandle]:
        return list(self._handles)

    def terminate(self) -> None:
        for h in self._handles:
            h.terminate()


def _member_options(options: FunctionGroupOptions) -> InvokeOptions:
    opts = InvokeOptions()
    opts.cpu = opts.cpu if options.cpu is None else options.cpu
    opts.memory = opts.memory if options.memory is None else options.memory
    opts.concurrency = opts.concurrency if options.concurrency is None else options.concurrency
    opts.recover_retry_times = options.recover_retry_times
    opts.custom_resources = dict(options.resources)
    timeout = -1 if options.timeout is None else options.timeout
    if (timeout != -1 and timeout < 0) or timeout > 0x7FFFFFFF:
        raise YRValueError(f"invalid timeout {timeout} in FunctionGroupOptions, expect:-1, [0, 0x7FFFFFFF]")
    opts.schedule_timeout_ms = -1 if timeout == -1 else timeout * 1000
    return _check_options(opts)


def create_function_group(wrapper: Any, args: tuple = (), group_size: int = 1,
                          options: FunctionGroupOptions | None = None) -> Any:
    """`group_size` members of a class (a FunctionGroupHandler) or runs of a function (refs),
    forming one communicator group with ranks 0..group_size-1."""
    options = options or FunctionGroupOptions()
    if not isinstance(group_size, int) or not 1 <= group_size <= MAX_GROUP_SIZE:
        raise YRValueError(f"invalid group size {group_size!r}: 1..{MAX_GROUP_SIZE}")
    bundle = options.scheduling_affinity_each_bundle_size
    if bundle is not None:
        if bundle <= 0:
            raise YRValueError(f"invalid bundle size: {bundle}, bundle size should bigger than 0")
        if bundle > group_size or group_size % bundle:
            raise YRValueError(f"group size: {group_size} is not divisible by bundle size: {bundle}")
    opts = _member_options(options)
    rt = _rt.current()
    group = f"fcc-{rt.rank}-{next(_names)}"
    owner = _owner()
    if isinstance(wrapper, InstanceCreator):
        cls, methods = wrapper.__wrapped__, wrapper._methods
        cls_key, label, init_args = f"cls:{cls.__qualname__}:{id(cls):x}", f"{cls.__qualname__}[{group}]", args
    elif isinstance(wrapper, FunctionProxy):
        cls, methods = _GroupTask, {"run": wrapper._nret}
        cls_key, label, init_args = "yrmpi:fcc-task", f"{wrapper.__name__}[{group}]", (wrapper.__wrapped__,)
    else:
        raise YRRuntimeError("function is not wrapped by @yr.invoke or @yr.instance")
    bundles = _reserve_bundles(group, group_size, bundle, opts, options.timeout) if bundle and bundle > 1 else []
    handles, states = [], []
    for rank_id in range(group_size):
        member = copy.copy(opts)  # (its constructor reads its rank from its environment)
        member.env_vars = {**opts.env_vars, ENV_RANK: str(rank_id), ENV_SIZE: str(group_size)}
        if bundles:
            member.resource_group_options = ResourceGroupOptions(bundles[rank_id // bundle], rank_id % bundle)
        state = rt.caller.create(cls, cls_key, methods, tuple(init_args), {}, member, owner, label=label)
        handle = InstanceHandle(state)
        states.append(state)
        rt.caller.call(state, "__setattr__", (CONTEXT_ATTR, (rank_id, group_size, group)), {}, 1)
        handles.append(handle)
    for k, name in enumerate(bundles):
        _free_with_last_member(states[k * bundle:(k + 1) * bundle], name)
    if isinstance(wrapper, InstanceCreator):
        return FunctionGroupHandler(handles)
    refs = [h.run.invoke(*args) for h in handles]
    for h, ref in zip(handles, refs):
        _end_after(h, ref)
    return refs


def _reserve_bundles(group: str, group_size: int, bundle: int, opts: InvokeOptions, timeout: int | None) -> list[str]:
    """`scheduling_affinity_each_bundle_size`: the members of one bundle share a node. Each
    bundle is a STRICT_PACK resource group of its members' capacity, reserved before they are
    created (waiting for room up to the options' timeout; refused at once if no node could ever
    hold it); each is removed when its last member has ended."""
    spec = {"CPU": opts.cpu, "Memory": opts.memory, **opts.custom_resources}
    names = []
    for k in range(group_size // bundle):
        rg = create_resource_group([dict(spec) for _ in range(bundle)], f"{group}-bundle{k}", "STRICT_PACK")
        try:
            rg.wait(-1 if timeout is None else timeout)
        except BaseException:
            for name in [*names, rg.name]:
                _remove_later(name)
            raise
        names.append(rg.name)
    return names


def _remove_later(name: str) -> None:
    """Free a resource group without waiting for the answer (from any thread, the poller's too)."""
    rt = _rt.current()
    rt.send(0, RgRemove(rt.new_id(), rt.rank, name))


def _free_with_last_member(states: list, name: str) -> None:
    left = [len(states)]

    def ended(_state: Any) -> None:
        left[0] -= 1  # (hooks run on the polling thread: one at a time)
        if left[0] == 0:
            _remove_later(name)

    for state in states:
        state.on_end = (state.on_end or []) + [ended]


def _end_after(handle: InstanceHandle, ref: Any) -> None:
    """A function's member ends once its run has returned (its ref keeps the value)."""
    first = ref[0] if isinstance(ref, list) else ref
    if isinstance(first, ObjectRef):
        first.on_complete(lambda _err: handle.terminate())
    else:  # return_nums=0: nothing to wait for here
        handle.terminate()


def get_function_group_context() -> FunctionGroupContext:
    """Inside a member: its rank id and the group's size (outside a function group: 0 and 0)."""
    rt = _rt.current()
    inst = rt.current_instance()
    ctx = getattr(getattr(inst, "obj", None), CONTEXT_ATTR, None) if inst is not None else None
    if ctx is None:
        if inst is not None and os.environ.get(ENV_SIZE):  # in the constructor: from its environment
            return FunctionGroupContext(rank_id=int(os.environ[ENV_RANK]), world_size=int(os.environ[ENV_SIZE]))
        return FunctionGroupContext()
    rank_id, world_size, _group = ctx
    return FunctionGroupContext(rank_id=rank_id, world_size=world_size)
