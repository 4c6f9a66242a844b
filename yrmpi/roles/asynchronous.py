"""Async instances: an instance's `async def` methods run on an event loop of its own (one
thread per instance that has such methods), as the SDK runs async classes: the calls interleave
at their `await`s (`await ref` works: ObjectRef.__await__), whatever `concurrency` says, and the
mailbox goes on to the next call without waiting for them; an optional `limit` caps the calls
running at once (Ray's `max_concurrency` for async actors), the rest wait their turn in arrival
order. Used by host.py."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
from collections.abc import Callable
from typing import Any

Done = Callable[[bool, Any], None]  # (ok, value or exception)


def async_methods(cls: type) -> frozenset[str]:
    """The names of a class's `async def` methods (computed once per constructed instance)."""
    names = set()
    for name in dir(cls):
        if name.startswith("__") and name != "__call__":
            continue
        try:
            member = inspect.getattr_static(cls, name)
        except AttributeError:
            continue
        member = getattr(member, "__func__", member)  # staticmethod / classmethod
        if inspect.iscoroutinefunction(member):
            names.add(name)
    return frozenset(names)


class InstanceLoop:
    """The event loop of one instance, on a daemon thread; `enter` runs on that thread first
    (it makes the instance the thread's current one, for the yr API inside its methods).
    `limit` > 0: at most that many calls run at once."""

    def __init__(self, label: str, enter: Callable[[], None], limit: int = 0) -> None:
        self.loop = asyncio.new_event_loop()
        self.pending: set[Any] = set()
        self.gate: Any = asyncio.Semaphore(limit) if limit > 0 else contextlib.nullcontext()
        self.thread = threading.Thread(target=self._run, args=(enter,), name=f"yrmpi-async {label}", daemon=True)
        self.thread.start()

    def _run(self, enter: Callable[[], None]) -> None:
        asyncio.set_event_loop(self.loop)
        enter()
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    def submit(self, fn: Callable[..., Any], args: tuple, kwargs: dict, done: Done) -> None:
        """Start `fn(*args, **kwargs)` (a coroutine function) on the loop; `done` gets its outcome
        on the loop's thread."""
        future = asyncio.run_coroutine_threadsafe(_call(self.gate, fn, args, kwargs), self.loop)
        self.pending.add(future)

        def finished(fut: Any) -> None:
            self.pending.discard(fut)
            if fut.cancelled():
                done(False, asyncio.CancelledError())
                return
            exc = fut.exception()
            done(exc is None, fut.result() if exc is None else exc)

        future.add_done_callback(finished)

    def stop(self) -> None:
        """Cancel the calls still running (their `done` reports the cancellation) and end the loop."""
        for future in list(self.pending):
            future.cancel()
        self.loop.call_soon_threadsafe(self.loop.stop)


async def _call(gate: Any, fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    async with gate:  # a Semaphore, or a nullcontext when there is no cap
        return await fn(*args, **kwargs)
