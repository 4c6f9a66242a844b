"""The decorators and the objects users hold: function proxies, creators, handles, methods."""

from __future__ import annotations

import copy
import inspect
from typing import Any, Callable

from .. import runtime as _rt
from ..core.errors import YRTypeError, YRValueError
from ..core.log import log
from ..core.options import InvokeOptions
from ..core.rank import of_this_job
from ..core.refs import ObjectRef
from ..roles.caller import InstanceState, RetryIf
from ..transport.pickling import after_pickle
from .groups import register_member

MAX_RETURNS = 100


def _check_return_nums(n: Any) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_RETURNS:
        raise YRValueError(f"return_nums must be an int in 0..{MAX_RETURNS}, got {n!r}")
    return n


def _check_options(opts: Any) -> InvokeOptions:
    if not isinstance(opts, InvokeOptions):
        raise YRTypeError(f"expected yr.InvokeOptions, got {type(opts).__name__}")
    checked = copy.deepcopy(opts).validated()
    checked.warn_ignored()
    return checked


def _shape_refs(refs: list[ObjectRef], nret: int) -> ObjectRef | list[ObjectRef] | None:
    if nret == 0:
        return None
    return refs[0] if nret == 1 else refs


def _owner() -> int | None:
    """The owner of what is created here: the instance whose code runs. A stateless call's
    one-shot instance ends when it returns, but what it created must outlive it (a returned
    ref of a call it made, as in yr and Ray): its creations belong to whoever made the call."""
    inst = _rt.current().current_instance()
    if inst is None:
        return None
    return inst.owner if inst.oneshot else inst.iid


# -- stateless functions ----------------------------------------------------------------------
class _Task:
    """A stateless call runs as a one-shot instance of this class."""

    def __init__(self, fn: Callable) -> None:
        self.fn = fn

    def run(self, *args: Any, **kwargs: Any) -> Any:
        value = self.fn(*args, **kwargs)
        if inspect.iscoroutine(value):  # `@yr.invoke async def`: run it to its end here
            import asyncio

            value = asyncio.run(value)
        return value


class FunctionProxy:
    """`@yr.invoke` on a function: `f.invoke(...)` runs it on some host rank."""

    def __init__(self, fn: Callable, opts: InvokeOptions | None, return_nums: int,
                 retry_if: RetryIf | None = None) -> None:
        """`retry_if`: which errors `retry_times` retries (None: any but a cancel, as in yr;
        yrmpi.ray passes Ray's policy: crashes, and the user's exceptions only when asked)."""
        self.__wrapped__ = fn
        self.__name__ = getattr(fn, "__name__", "function")
        self.__doc__ = fn.__doc__
        self._opts = _check_options(opts or InvokeOptions())
        self._nret = _check_return_nums(return_nums)
        self._retry_if = retry_if

    def options(self, opts: InvokeOptions) -> FunctionProxy:
        """Set the options used by later `invoke`s of this proxy and return it."""
        self._opts = _check_options(opts)
        return self

    def invoke(self, *args: Any, **kwargs: Any) -> ObjectRef | list[ObjectRef] | None:
        rt = _rt.current()
        opts = self._opts.validated()
        owner = _owner()

        def submit(pending: Any = None) -> list[ObjectRef]:
            state = rt.caller.create(_Task, "yrmpi:task", {"run": self._nret}, (self.__wrapped__,), {},
                                     opts, owner, oneshot=True, label=self.__name__)
            return rt.caller.call(state, "run", args, kwargs, self._nret, retries=opts.retry_times,
                                  resubmit=submit, pending=pending, retry_if=self._retry_if)

        return _shape_refs(submit(), self._nret)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"{self.__name__} is a yr function: call {self.__name__}.invoke(...) "
                        f"to run it remotely, or {self.__name__}.__wrapped__(...) to run it here")

    def __repr__(self) -> str:
        return f"<yr function {self.__name__}>"


# -- stateful instances -----------------------------------------------------------------------
def _methods_of(cls: type) -> dict[str, int]:
    methods = {}
    for name, member in inspect.getmembers(cls, callable):
        if name.startswith("__") and name != "__call__":
            continue
        methods[name] = getattr(member, "__yr_return_nums__", 1)
    return methods


class InstanceCreator:
    """`@yr.instance` on a class: `Cls.invoke(...)` creates a remote instance, returns a handle."""

    def __init__(self, cls: type, opts: InvokeOptions | None) -> None:
        self.__wrapped__ = cls
        self.__name__ = cls.__name__
        self.__qualname__ = cls.__qualname__
        self.__doc__ = cls.__doc__
        self._opts = _check_options(opts or InvokeOptions())
        self._methods = _methods_of(cls)

    @property
    def invoke_options(self) -> InvokeOptions:
        """A copy of the options its instances are created with."""
        return copy.deepcopy(self._opts)

    def options(self, opts: InvokeOptions) -> InstanceCreator:
        """A creator with other options; this one stays as it was."""
        other = copy.copy(self)
        other._opts = _check_options(opts)
        return other

    def invoke(self, *args: Any, **kwargs: Any) -> InstanceHandle:
        rt = _rt.current()
        opts = self._opts.validated()
        state = rt.caller.create(self.__wrapped__, f"cls:{self.__qualname__}:{id(self.__wrapped__):x}",
                                 self._methods, args, kwargs, opts, _owner(), defer=bool(opts.group_name),
                                 label=_label(self.__qualname__, rt.current_instance()))
        if opts.group_name:  # a yr.Group member: created at the group's invoke()
            register_member(opts.group_name, state)
        return InstanceHandle(state)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"{self.__name__} is a yr instance class: create it with "
                        f"{self.__name__}.invoke(...)")

    def __repr__(self) -> str:
        return f"<yr instance class {self.__qualname__}>"


def _label(qualname: str, creator: Any) -> str:
    """An instance's name in output and errors. A creator labelled "<Class> <tag>" (a sweep's
    supervisor: the experiment id) passes the tag on, so its workers' lines say which
    experiment they belong to."""
    tag = creator.cls_name.partition(" ")[2] if creator is not None else ""
    return f"{qualname} {tag}" if tag and " " not in qualname else qualname


class InstanceHandle:
    """A reference to a remote instance; `h.method.invoke(...)` calls it."""

    def __init__(self, state: InstanceState) -> None:
        self._state = state
        state.handles += 1

    def __del__(self) -> None:
        state = self._state
        state.handles -= 1
        if state.handles <= 0:
            rt = _rt.active()
            if rt is not None:
                rt.caller.dropped.append(state)  # ended by the poller, never from a finalizer

    @property
    def instance_id(self) -> str:
        return f"{self._state.iid:x}"

    @property
    def real_id(self) -> str:
        """The SDK's id of the instance as the system knows it: the same as `instance_id` here."""
        state = self._state.forward or self._state
        return f"{state.iid:x}"

    def is_activate(self) -> bool:
        """True while the instance is usable: not terminated, not failed, as far as this rank knows."""
        state = self._state.forward or self._state
        return state.ended is None

    def __getattr__(self, name: str) -> MethodProxy:
        if name.startswith("__"):
            raise AttributeError(name)
        methods = self._state.methods
        if name not in methods:
            raise AttributeError(f"{self._state.cls_name} has no method {name!r}; "
                                 f"it has: {', '.join(sorted(methods)) or 'none'}")
        proxy = MethodProxy(self._state, name, methods[name])
        self.__dict__[name] = proxy  # later lookups skip __getattr__
        return proxy

    def terminate(self, is_sync: bool = False) -> None:
        """End the instance (and every instance it owns); is_sync waits until it has ended."""
        _rt.current().caller.terminate(self._state, "terminated by its handle", graceful=False,
                                       sync=is_sync)

    def __reduce__(self) -> tuple:
        state = self._state
        rt = _rt.current()
        caller = rt.caller
        after_pickle(lambda: caller.on_handle_pickled(state))
        return (_rebuild_handle, (state.iid, state.cls_name, state.methods, state.rank, state.owner_rank,
                                  rt.settings["job_id"], state.recover))

    def __repr__(self) -> str:
        return f"<{self._state.cls_name} handle {self.instance_id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, InstanceHandle) and other._state.iid == self._state.iid

    def __hash__(self) -> int:
        return hash(self._state.iid)


def _rebuild_handle(
    iid: int, cls_name: str, methods: dict[str, int], rank: int | None, owner_rank: int, job: str,
    recover: int = 0,
) -> InstanceHandle:
    state = of_this_job(job, "instance handle").caller.known_instance(iid, cls_name, methods, rank, owner_rank,
                                                                      recover)
    if state.owned_here:  # came home: the reference it carried is this handle now
        state.remote_refs -= 1
    else:
        state.received += 1
    return InstanceHandle(state)


class MethodProxy:
    def __init__(self, state: InstanceState, name: str, nret: int) -> None:
        self._state = state
        self._name = name
        self._nret = nret

    def options(self, opts: InvokeOptions) -> MethodProxy:
        """Per-call options; resources and retries belong to the instance, so only checked here."""
        _check_options(opts)
        return self

    def invoke(self, *args: Any, **kwargs: Any) -> ObjectRef | list[ObjectRef] | None:
        refs = _rt.current().caller.call(self._state, self._name, args, kwargs, self._nret)
        return _shape_refs(refs, self._nret)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"call {self._name}.invoke(...) on a yr instance handle")


InstanceProxy = InstanceHandle  # the SDK's name of the handle


# -- decorators -------------------------------------------------------------------------------
def _ignored_keywords(what: str, extra: dict) -> None:
    if extra:
        log.warning("%s: %s accepted and ignored (they configure cluster services yrmpi does not have)",
                    what, ", ".join(sorted(extra)))


def invoke(fn: Callable | None = None, *, invoke_options: InvokeOptions | None = None,
           return_nums: int | None = 1, **sdk_keywords: Any) -> Any:
    """`@yr.invoke` or `@yr.invoke(invoke_options=..., return_nums=N)` on a function (the SDK's
    other keywords, such as `initializer`, are accepted and ignored with a warning)."""
    return_nums = 1 if return_nums is None else return_nums
    _ignored_keywords("@yr.invoke", sdk_keywords)
    if fn is None:
        return lambda f: FunctionProxy(f, invoke_options, return_nums)
    if isinstance(fn, type) or not callable(fn):
        raise YRTypeError(f"@yr.invoke decorates functions; use @yr.instance for classes, got {fn!r}")
    return FunctionProxy(fn, invoke_options, return_nums)


def instance(cls: type | None = None, *, invoke_options: InvokeOptions | None = None, **sdk_keywords: Any) -> Any:
    """`@yr.instance` or `@yr.instance(invoke_options=...)` on a class."""
    _ignored_keywords("@yr.instance", sdk_keywords)
    if cls is None:
        return lambda c: InstanceCreator(c, invoke_options)
    if not isinstance(cls, type):
        raise YRTypeError(f"@yr.instance decorates classes; use @yr.invoke for functions, got {cls!r}")
    return InstanceCreator(cls, invoke_options)


def method(fn: Callable | None = None, *, return_nums: int = 1, **sdk_keywords: Any) -> Any:
    """`@yr.method(return_nums=N)` on a method of an instance class (`concurrency_group=` is
    accepted and ignored)."""
    _ignored_keywords("@yr.method", sdk_keywords)

    def mark(f: Callable) -> Callable:
        f.__yr_return_nums__ = _check_return_nums(return_nums)
        return f

    return mark if fn is None else mark(fn)
