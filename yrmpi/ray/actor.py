"""Ray's remote functions and actors over yrmpi's proxies: `f.remote()` is `f.invoke()`,
`Cls.remote()` is `Cls.invoke()`, `handle.method.remote()` is `handle.method.invoke()`."""

from __future__ import annotations

import copy
import itertools
from typing import Any, Callable

import yrmpi as yr
from yrmpi.api.handles import FunctionProxy, MethodProxy

from . import _options, _state
from .exceptions import UnsupportedError, from_yrmpi

__all__ = ["ActorClass", "ActorHandle", "ActorMethod", "RemoteFunction", "method"]


def _converted(exc: BaseException, actor_id: str | None = None) -> BaseException:
    return from_yrmpi(exc, actor_id)


class RemoteFunction:
    """`@ray.remote` on a function."""

    def __init__(self, fn: Callable, options: dict) -> None:
        _options.check("remote functions", options, _options.TASK_OPTIONS)
        self._function = fn
        self._options = dict(options)
        self._nret = _options.num_returns(options.get("num_returns", 1))
        _options.to_invoke_options(self._options, actor=False)  # bad values fail at decoration, as in Ray
        self._retry_if = _options.retry_if(self._options)
        self._proxy: Any = None
        self.__name__ = getattr(fn, "__name__", "function")
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def _build(self) -> Any:
        opts = _options.to_invoke_options(self._options, actor=False)
        self._proxy = FunctionProxy(self._function, opts, self._nret, retry_if=self._retry_if)
        return self._proxy

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        _state.ensure_initialized()
        proxy = self._proxy or self._build()
        try:
            return proxy.invoke(*args, **kwargs)
        except yr.YRError as exc:
            raise _converted(exc) from None

    def options(self, **options: Any) -> RemoteFunction:
        return RemoteFunction(self._function, {**self._options, **options})

    def bind(self, *args: Any, **kwargs: Any) -> Any:
        raise UnsupportedError("Ray DAGs (.bind) are not supported by yrmpi.ray: call .remote() and pass the refs")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"Remote functions cannot be called directly. Instead of running "
                        f"'{self.__name__}()', try '{self.__name__}.remote()'.")

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_proxy": None}

    def __repr__(self) -> str:
        return f"<yrmpi.ray remote function {self.__name__}>"


class ActorClass:
    """`@ray.remote` on a class: `Cls.remote(...)` creates an actor and returns its handle."""

    def __init__(self, cls: type, options: dict) -> None:
        _options.check("actors", options, _options.ACTOR_OPTIONS)
        self._cls = cls
        self._options = dict(options)
        _options.to_invoke_options(self._options, actor=True)  # bad values fail at decoration
        self._creators: list[Any] | None = None
        self._turn: Any = None
        self.__name__ = cls.__name__
        self.__qualname__ = cls.__qualname__
        self.__doc__ = cls.__doc__
        self.__wrapped__ = cls

    def _build(self) -> list[Any]:
        """One creator, or, for an actor that reserves no CPU (Ray's default), one creator per host
        rank that prefers that rank: zero-CPU actors go round the ranks instead of piling onto one."""
        opts = _options.to_invoke_options(self._options, actor=True, namespace=_state.namespace())
        base = yr.instance(invoke_options=opts)(self._cls)  # async def methods: yrmpi's async instances
        creators = [base]
        if opts.cpu == 0 and not opts.schedule_affinities:
            hosts = _state.host_ranks()
            creators = []
            for rank in hosts:
                preferred = copy.deepcopy(opts)
                op = yr.LabelOperator(yr.OperatorType.LABEL_IN, "rank", [str(rank)])
                preferred.schedule_affinities = [yr.Affinity(yr.AffinityKind.RESOURCE, yr.AffinityType.PREFERRED,
                                                             [op])]
                creators.append(base.options(preferred))
            start = _state.own_rank() % max(len(creators), 1)
            self._turn = itertools.islice(itertools.cycle(range(len(creators))), start, None)
        self._creators = creators or [base]
        return self._creators

    def remote(self, *args: Any, **kwargs: Any) -> ActorHandle:
        _state.ensure_initialized()
        creators = self._creators or self._build()
        creator = creators[next(self._turn)] if self._turn is not None else creators[0]
        try:
            inner = creator.invoke(*args, **kwargs)
        except yr.YRError as exc:
            raise _converted(exc) from None
        return ActorHandle(inner, self.__name__)

    def options(self, **options: Any) -> ActorClass:
        return ActorClass(self._cls, {**self._options, **options})

    def bind(self, *args: Any, **kwargs: Any) -> Any:
        raise UnsupportedError("Ray DAGs (.bind) are not supported by yrmpi.ray: call .remote()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"Actors cannot be instantiated directly. Instead of '{self.__name__}()', "
                        f"use '{self.__name__}.remote()'.")

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_creators": None, "_turn": None}

    def __repr__(self) -> str:
        return f"<yrmpi.ray actor class {self.__qualname__}>"


class ActorHandle:
    """A Ray actor handle over a yrmpi instance handle; it can be passed to other tasks and actors."""

    def __init__(self, inner: yr.InstanceHandle, class_name: str = "") -> None:
        self._inner = inner
        self._class_name = class_name or inner._state.cls_name

    def __getattr__(self, name: str) -> ActorMethod:
        if name.startswith("__") or name in ("_inner", "_class_name"):
            raise AttributeError(name)
        try:
            proxy = getattr(self._inner, name)
        except AttributeError:
            raise AttributeError(f"'ActorHandle' object has no attribute '{name}'") from None
        m = ActorMethod(self, name, proxy)
        self.__dict__[name] = m
        return m

    @property
    def _actor_id(self) -> str:
        return self._inner.instance_id

    def __reduce__(self) -> tuple:
        return (ActorHandle, (self._inner, self._class_name))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorHandle) and other._inner == self._inner

    def __hash__(self) -> int:
        return hash(self._inner)

    def __repr__(self) -> str:
        return f"Actor({self._class_name}, {self._inner.instance_id})"


class ActorMethod:
    """`handle.method`: `.remote(...)` calls it, `.options(num_returns=...)` changes its results."""

    __slots__ = ("_handle", "_name", "_proxy")

    def __init__(self, handle: ActorHandle, name: str, proxy: Any) -> None:
        self._handle = handle
        self._name = name
        self._proxy = proxy

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self._proxy.invoke(*args, **kwargs)
        except yr.YRError as exc:
            raise _converted(exc, self._handle._actor_id) from None

    def options(self, **options: Any) -> ActorMethod:
        _options.check("actor methods", options, _options.METHOD_OPTIONS)
        if "num_returns" not in options:
            return self
        nret = _options.num_returns(options["num_returns"])
        state = self._handle._inner._state
        return ActorMethod(self._handle, self._name, MethodProxy(state, self._name, nret))

    def bind(self, *args: Any, **kwargs: Any) -> Any:
        raise UnsupportedError("Ray DAGs and compiled graphs (.bind) are not supported by yrmpi.ray: call .remote()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("Actor methods cannot be called directly. Instead of running 'object.method()', "
                        "try 'object.method.remote()'.")


def method(*args: Any, **kwargs: Any) -> Any:
    """`@ray.method(num_returns=N)` on an actor method (`concurrency_group=` accepted, ignored)."""
    if len(args) == 1 and not kwargs and callable(args[0]):
        return args[0]
    if args:
        raise ValueError("The @ray.method decorator must be applied using at least one keyword argument, "
                         "e.g. @ray.method(num_returns=2)")
    _options.check("@ray.method", kwargs, _options.METHOD_OPTIONS)
    nret = _options.num_returns(kwargs.get("num_returns", 1))

    def mark(fn: Callable) -> Callable:
        return yr.method(return_nums=nret)(fn)

    return mark
