"""ObjectRef: a future value owned by the rank that created it (by a call or `put`), and the
waiting that `yr.get` and `yr.wait` do on refs.

A `Slot` holds the state (pending, then a value or an error), like a concurrent.futures.Future
with less locking: only the polling thread resolves slots, so setting a value takes no lock;
callbacks, which any thread may add, are swapped under one. An ObjectRef sent to another rank
arrives without its slot; the first `get` there fetches the value from the owner rank.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

from . import rank as _rank
from .errors import YRTimeoutError, YRTypeError, YRValueError

_MISSING = object()
_failures = itertools.count(1)  # the order in which slots failed on this rank (arrival order)
_callbacks_lock = threading.Lock()  # adding a callback (any thread) vs. taking them to run (the resolver)


def _as_it_is(error: BaseException) -> BaseException:
    return error


_error_view: Callable[[BaseException], BaseException] = _as_it_is  # see view_errors_as


def view_errors_as(view: Callable[[BaseException], BaseException]) -> None:
    """How a failed ref's error reaches `await ref` and `as_future()` in this process;
    yrmpi.ray installs Ray's exception classes, which its programs catch."""
    global _error_view
    _error_view = view


class Slot:
    __slots__ = ("value", "error", "_callbacks", "fetching", "failed_at")

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
        self.failed_at = next(_failures)
        self.error = error
        if self._callbacks:
            self._fire()

    def add_callback(self, fn: Callable[[Slot], None]) -> None:
        """Run fn(slot) once done (at once if already done), exactly once.

        The resolver sets the value, then looks for callbacks; this adds the callback, then
        looks at the value: whichever comes second fires it. Both take the list under the lock,
        so a callback is run by one of them only."""
        with _callbacks_lock:
            if self._callbacks is None:
                self._callbacks = [fn]
            else:
                self._callbacks.append(fn)
        if self.done():
            self._fire()

    def _fire(self) -> None:
        with _callbacks_lock:
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

    def __new__(cls, ref_id: int | str, owner: int | None = None, slot: Slot | None = None) -> ObjectRef:
        if owner is None:  # `ObjectRef(object_id)`, as in the SDK: the ref of that id on this rank
            try:
                ref_id = int(ref_id, 16) if isinstance(ref_id, str) else int(ref_id)
            except ValueError:
                raise YRValueError(f"not an object id: {ref_id!r}") from None
            return _rank.current().objects.ref_from_wire(ref_id, ref_id >> 40)
        return super().__new__(cls)

    def __init__(self, ref_id: int | str, owner: int | None = None, slot: Slot | None = None) -> None:
        if owner is None:  # (built by __new__)
            return
        self.id = ref_id
        self.owner = owner
        self._slot = slot

    def __repr__(self) -> str:
        state = "done" if self._slot.done() else "pending"
        return f"ObjectRef({self.id:x}, owner=rank {self.owner}, {state})"

    def __reduce__(self) -> tuple:
        rank = _rank.current()
        rank.objects.pin(self)
        return (_rebuild, (self.id, self.owner, rank.settings["job_id"]))

    def get(self, timeout: float = 300) -> Any:
        return get(self, timeout)

    def done(self) -> bool:
        _rank.current().objects.ensure_fetch(self)
        return self._slot.done()

    def is_exception(self) -> bool:
        """True once the ref is known to hold an error (it does not wait)."""
        _rank.current().objects.ensure_fetch(self)
        return self._slot.error is not None

    def __await__(self) -> Any:
        """`await ref` inside an `async def` method (or any event loop)."""
        import asyncio

        return asyncio.wrap_future(self.as_future()).__await__()

    def wait(self, timeout: float | None = None) -> bool:
        ready, _ = wait([self], timeout=timeout)
        return bool(ready)

    def on_complete(self, callback: Callable[[Any], None]) -> None:
        """Call callback(error_or_None) when the value is ready (on the polling thread)."""
        _rank.current().objects.ensure_fetch(self)
        self._slot.add_callback(lambda slot: callback(slot.error))

    def as_future(self) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()

        def resolve(slot: Slot) -> None:
            if slot.error is not None:
                future.set_exception(_error_view(slot.error))
            else:
                future.set_result(slot.value)

        _rank.current().objects.ensure_fetch(self)
        self._slot.add_callback(resolve)  # every rank has a serve thread polling: it resolves
        return future


def new_ref(ref_id: int, owner: int, slot: Slot) -> ObjectRef:
    """A ref with its slot, built without ObjectRef's __new__ (the SDK's `ObjectRef(object_id)`
    form): every call makes one, and that path costs two Python calls more."""
    ref = _new_object(ObjectRef)
    ref.id, ref.owner, ref._slot = ref_id, owner, slot
    return ref


_new_object = object.__new__


def slot_of(ref: ObjectRef) -> Slot:
    """The state behind a ref, for the roles that resolve or serve it (not for user code)."""
    return ref._slot


def _rebuild(ref_id: int, owner: int, job: str) -> ObjectRef:
    return _rank.of_this_job(job, "ObjectRef").objects.ref_from_wire(ref_id, owner)


# -- waiting on refs: yr.get and yr.wait --------------------------------------------------------
def deadline_of(timeout: float | None, allow_forever: tuple = (-1, None)) -> float | None:
    """The monotonic deadline of a user's timeout in seconds (None: forever), checked."""
    if timeout in allow_forever:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise YRTypeError(f"timeout must be a number of seconds, got {timeout!r}")
    if timeout <= 0:
        raise YRValueError(f"timeout must be > 0 seconds, or -1 to wait forever; got {timeout}")
    return time.monotonic() + timeout


def as_ref_list(refs: Any, what: str) -> tuple[list[ObjectRef], bool]:
    """The refs of a `yr.get`-style argument (one ref or a list), and whether it was one."""
    single = isinstance(refs, ObjectRef)
    items = [refs] if single else refs
    if not isinstance(items, (list, tuple)):
        raise YRTypeError(f"{what} takes an ObjectRef or a list of them, got {type(refs).__name__}")
    for ref in items:
        if not isinstance(ref, ObjectRef):
            raise YRTypeError(f"{what} takes ObjectRefs, got {type(ref).__name__}: {ref!r}")
    return list(items), single


def wait_slot(slot: Slot, deadline: float | None) -> bool:
    """Wait (polling) until one slot is done; False at the deadline (a monotonic time)."""
    return slot.done() or _rank.current().wait(slot.done, lambda wake: slot.add_callback(lambda _s: wake()),
                                               deadline)


def _wait_refs(refs: list[ObjectRef], count: int, deadline: float | None, until_error: bool = False) -> None:
    """Wait until `count` refs are done (`until_error`: or one has failed)."""
    rk = _rank.current()
    for ref in refs:
        rk.objects.ensure_fetch(ref)
    pending = [r._slot for r in refs if not r._slot.done()]  # (each slot looked at once: it may finish meanwhile)
    needed = count - (len(refs) - len(pending))
    if needed <= 0 or (until_error and any(r._slot.error is not None for r in refs)):
        return
    wake: list[Callable[[], None]] = []
    # Callbacks run on whichever thread resolves a slot, or on this one (add_callback), at the
    # same time: each appends (atomic), where a shared `remaining -= 1` could lose a count.
    arrived: list[Slot] = []
    failed: list[Slot] = []

    def enough() -> bool:
        return len(arrived) >= needed or bool(failed)

    def one_done(slot: Slot) -> None:
        arrived.append(slot)
        if until_error and slot.error is not None:
            failed.append(slot)
        if wake and enough():
            wake[0]()

    for slot in pending:
        slot.add_callback(one_done)  # (at once if it finished since)
    rk.wait(enough, wake.append, deadline)


def get(refs: ObjectRef | list[ObjectRef], timeout: float = 300, allow_partial: bool = False) -> Any:
    """The value of one ref, or a list of values; waits up to `timeout` seconds (-1: forever)."""
    rk = _rank.current()
    if type(refs) is ObjectRef:  # the common `yr.get(ref)`, kept short: it is on every synchronous call
        deadline = deadline_of(timeout)
        rk.objects.ensure_fetch(refs)
        slot = refs._slot
        if not slot.done() and not wait_slot(slot, deadline):
            if allow_partial:
                return []
            raise YRTimeoutError(f"yr.get timed out after {timeout} s: {refs!r} is not ready")
        return slot.result()
    items, single = as_ref_list(refs, "yr.get")
    deadline = deadline_of(timeout)
    _wait_refs(items, len(items), deadline, until_error=True)
    first_failure(items)
    pending = [r for r in items if not r._slot.done()]
    if pending and not allow_partial:
        raise YRTimeoutError(f"yr.get timed out after {timeout} s: {len(pending)} of {len(items)} "
                             f"refs not ready (first: {pending[0]!r})")
    values = [r._slot.result() for r in items if r._slot.done()]
    return values[0] if single and values else values


def first_failure(refs: list[ObjectRef]) -> None:
    """Raise the error of the ref that failed first, if any failed: the root cause, with the
    failures that had arrived by then, in their order, as its `consequences` (each of those
    gets the root cause as `__cause__` if it had none). "First" is the order in which the
    failures reached this rank: ranks' clocks differ, and a consequence (a group member
    released because another failed) always travels one hop further than its cause."""
    failed = [r._slot for r in refs if r._slot.error is not None]
    if not failed:
        return
    failed.sort(key=lambda slot: slot.failed_at)
    root = failed[0].error
    consequences = []
    for slot in failed[1:]:
        err = slot.error
        if err is root or any(err is c for c in consequences):
            continue
        consequences.append(err)
        if err.__cause__ is None:
            try:
                err.__cause__ = root
            except Exception:
                pass
    try:
        root.consequences = consequences
    except Exception:
        pass
    raise root


def wait(refs: ObjectRef | list[ObjectRef], wait_num: int | None = None,
         timeout: float | None = None) -> tuple[list[ObjectRef], list[ObjectRef]]:
    """(ready, unready) once `wait_num` refs are done (errors count as done) or at the timeout."""
    _rank.current()
    items, _ = as_ref_list(refs, "yr.wait")
    if len({id(r) for r in items}) != len(items) or len({r.id for r in items}) != len(items):
        raise YRValueError("yr.wait got the same ObjectRef twice; pass each ref once")
    count = len(items) if wait_num is None else wait_num
    if not isinstance(count, int) or not 0 <= count <= len(items):
        raise YRValueError(f"wait_num must be in 0..{len(items)}, got {wait_num!r}")
    deadline = deadline_of(timeout, allow_forever=(None, -1))
    _wait_refs(items, count, deadline)
    ready = [r for r in items if r._slot.done()]
    unready = [r for r in items if not r._slot.done()]
    return ready, unready
