"""`ray.util` on yrmpi: ActorPool, list_named_actors, get_node_ip_address."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Callable

import yrmpi as yr

from .. import _state
from ..exceptions import UnsupportedError
from . import scheduling_strategies

__all__ = ["ActorPool", "get_node_ip_address", "list_named_actors", "scheduling_strategies"]


def get_node_ip_address() -> str:
    _state.ensure_initialized()
    return yr.get_node_ip_address()


def list_named_actors(all_namespaces: bool = False) -> list:
    """The names of the live named actors of this namespace, or, with all_namespaces, a list of
    {"name", "namespace"} dicts (as in Ray)."""
    _state.ensure_initialized()
    full = yr.list_named_instances(all_namespaces=True)
    rows = []
    for entry in full:
        ns, sep, name = entry.partition("-")
        rows.append({"name": name, "namespace": ns} if sep else {"name": entry, "namespace": ""})
    if all_namespaces:
        return rows
    here = _state.namespace()
    return [r["name"] for r in rows if r["namespace"] == here]


class ActorPool:
    """Run tasks over a fixed set of actors: `fn(actor, value)` returns a ref; results come back
    in submission order (`get_next`, `map`) or as they finish (`*_unordered`)."""

    def __init__(self, actors: list) -> None:
        self._idle = list(actors)
        self._future_to_actor: dict[int, tuple[Any, Any]] = {}  # id(ref) -> (ref, actor)
        self._index_to_future: dict[int, Any] = {}
        self._next_task_index = 0
        self._next_return_index = 0
        self._pending: list[tuple[Callable, Any]] = []

    def map(self, fn: Callable, values: Iterable) -> Iterator:
        while self.has_next():  # results of an earlier map are dropped, as in Ray
            try:
                self.get_next(timeout=0, ignore_if_timedout=True)
            except TimeoutError:
                pass
        for v in values:
            self.submit(fn, v)
        while self.has_next():
            yield self.get_next()

    def map_unordered(self, fn: Callable, values: Iterable) -> Iterator:
        while self.has_next():
            try:
                self.get_next_unordered(timeout=0)
            except TimeoutError:
                pass
        for v in values:
            self.submit(fn, v)
        while self.has_next():
            yield self.get_next_unordered()

    def submit(self, fn: Callable, value: Any) -> None:
        if self._idle:
            actor = self._idle.pop()
            ref = fn(actor, value)
            self._future_to_actor[id(ref)] = (ref, actor, self._next_task_index)
            self._index_to_future[self._next_task_index] = ref
            self._next_task_index += 1
        else:
            self._pending.append((fn, value))

    def has_next(self) -> bool:
        return bool(self._future_to_actor)

    def get_next(self, timeout: float | None = None, ignore_if_timedout: bool = False) -> Any:
        from .. import get, wait
        from ..exceptions import GetTimeoutError

        if not self.has_next():
            raise StopIteration("No more results to get")
        if self._next_return_index >= self._next_task_index:
            raise ValueError("It is not allowed to call get_next() after get_next_unordered().")
        ref = self._index_to_future[self._next_return_index]
        if timeout is not None:
            ready, _ = wait([ref], timeout=timeout)
            if not ready:
                if ignore_if_timedout:
                    return None
                raise GetTimeoutError("Timed out waiting for result")
        del self._index_to_future[self._next_return_index]
        self._next_return_index += 1
        _, actor, _ = self._future_to_actor.pop(id(ref))
        self._return_actor(actor)
        return get(ref)

    def get_next_unordered(self, timeout: float | None = None, ignore_if_timedout: bool = False) -> Any:
        from .. import get, wait
        from ..exceptions import GetTimeoutError

        if not self.has_next():
            raise StopIteration("No more results to get")
        refs = [entry[0] for entry in self._future_to_actor.values()]
        ready, _ = wait(refs, num_returns=1, timeout=timeout)
        if not ready:
            if ignore_if_timedout:
                return None
            raise GetTimeoutError("Timed out waiting for result")
        ref = ready[0]
        _, actor, index = self._future_to_actor.pop(id(ref))
        self._index_to_future.pop(index, None)
        self._next_return_index = max(self._next_return_index, index + 1)
        self._return_actor(actor)
        return get(ref)

    def _return_actor(self, actor: Any) -> None:
        self._idle.append(actor)
        if self._pending:
            self.submit(*self._pending.pop(0))

    def has_free(self) -> bool:
        return bool(self._idle) and not self._pending

    def pop_idle(self) -> Any:
        return self._idle.pop() if self.has_free() else None

    def push(self, actor: Any) -> None:
        busy = [entry[1] for entry in self._future_to_actor.values()]
        if actor in self._idle or actor in busy:
            raise ValueError("Actor already belongs to current ActorPool")
        self._return_actor(actor)


_OUT_OF_SCOPE = {
    "placement_group": "yrmpi's resource groups (yr.create_resource_group)",
    "remove_placement_group": "yr.remove_resource_group",
    "get_placement_group": "yrmpi's resource groups (yr.create_resource_group)",
    "collective": "yr.collective (allreduce and friends over a supervisor's workers)",
    "queue": "an actor that holds a collections.deque, or the KV store (yr.kv_write / yr.kv_read)",
    "multiprocessing": "ray.remote tasks, or ActorPool",
    "dask": "ray.remote tasks",
    "joblib": "ray.remote tasks, or ActorPool",
    "state": "ray.nodes() and ray.util.list_named_actors()",
}


def __getattr__(name: str) -> Any:
    if name in _OUT_OF_SCOPE:
        raise UnsupportedError(f"ray.util.{name} is not supported by yrmpi.ray: use {_OUT_OF_SCOPE[name]} "
                               "(see docs/ray.md)")
    raise AttributeError(f"module 'yrmpi.ray.util' has no attribute {name!r}")
