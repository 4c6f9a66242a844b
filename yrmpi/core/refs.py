"""ObjectRef: a future value owned by the rank that created it (by a call or `put`).

A `Slot` holds the state (pending, then a value or an error), like a concurrent.futures.Future
without its locks: only the polling thread resolves slots. An ObjectRef sent to another rank
arrives without its slot; the first `get` there fetches the value from the owner rank.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import Any

from .. import runtime as _rt

_MISSING = object()


class Slot:
    __slots__ = ("value", "error", "_callbacks", "fetching")

    def __init__(self) -> None:
        self.value: Any = _MISSING
        self.error: BaseException | None = None
        self._callbacks: list[Callable[[Slot], None]] | None = None  # most slots never get one
        self.fetching = False

    def done(self) -> bool:
        return self.value is not _MISSING or self.error is not None

    def set_result(self, value: Any) -> None:
        self.value = value
        if self._callbacks:
            self._fire()

    def set_error(self, error: BaseException) -> None:
        self.error = error
        if self._callbacks:
            self._fire()

    def add_callback(self, fn: Callable[[Slot], None]) -> None:
        """Run fn(slot) once done (at once if already done)."""
        if self._callbacks is None:
            self._callbacks = []
        self._callbacks.append(fn)
        if self.done():
            self._fire()

    def _fire(self) -> None:
        callbacks, self._callbacks = self._callbacks, None
        for fn in callbacks or ():
            fn(self)

    def result(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


class ObjectRef:
    """A handle to a value that a call will produce (or that `put` stored)."""

    __slots__ = ("id", "owner", "_slot", "__weakref__")

    def __init__(self, ref_id: int, owner: int, slot: Slot) -> None:
        self.id = ref_id
        self.owner = owner
        self._slot = slot

    def __repr__(self) -> str:
        state = "done" if self._slot.done() else "pending"
        return f"ObjectRef({self.id:x}, owner=rank {self.owner}, {state})"

    def __reduce__(self) -> tuple:
        _rt.current().objects.pin(self)
        return (_rebuild, (self.id, self.owner))

    def get(self, timeout: float = 300) -> Any:
        from ..api.functions import get

        return get(self, timeout)

    def done(self) -> bool:
        _rt.current().objects.ensure_fetch(self)
        return self._slot.done()

    def wait(self, timeout: float | None = None) -> bool:
        from ..api.functions import wait

        ready, _ = wait([self], timeout=timeout)
        return bool(ready)

    def on_complete(self, callback: Callable[[Any], None]) -> None:
        """Call callback(error_or_None) when the value is ready (on the polling thread)."""
        _rt.current().objects.ensure_fetch(self)
        self._slot.add_callback(lambda slot: callback(slot.error))

    def as_future(self) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()

        def resolve(slot: Slot) -> None:
            if slot.error is not None:
                future.set_exception(slot.error)
            else:
                future.set_result(slot.value)

        _rt.current().objects.ensure_fetch(self)
        self._slot.add_callback(resolve)  # every rank has a serve thread polling: it resolves
        return future


def _rebuild(ref_id: int, owner: int) -> ObjectRef:
    return _rt.current().objects.ref_from_wire(ref_id, owner)
