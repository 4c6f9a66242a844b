"""What a role may ask of its rank, and the one rank of this process.

The roles (caller, object store, host, scheduler, group registry, collectives) are typed
against `Rank`, never against the runtime that implements it: a test harness can drive
them with a rank of its own (`tests/loopback.py` runs N ranks in one process), and none of
them can reach into another role. The runtime installs itself here when it starts
(`install`); the user-facing objects (refs, handles) find it with `current()`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Set
from typing import Any, Protocol

from .errors import YRRuntimeError, YRValueError


class InstanceContext(Protocol):
    """The instance whose code the calling thread runs (see `transport.interrupt`)."""

    iid: int
    cls_name: str
    threads: set[int]
    waiting: set[int]
    ended: Any
    lock: threading.Lock


class Rank(Protocol):
    """The services of one rank that every role may use."""

    rank: int
    size: int
    settings: dict  # agreed at start-up: job id, placement policy, per-rank capacities, output prefixing

    def new_id(self) -> int:
        """A job-unique id whose top bits name this rank (`id >> 40`)."""

    def clock(self) -> float:
        """Monotonic seconds."""

    def send(self, dest: int, msg: tuple) -> None:
        """Send one message (a `core.messages` type)."""

    def encode(self, msg: tuple) -> tuple:
        """Pickle a message now (errors surface here); send it later with `send_encoded`."""

    def send_encoded(self, dest: int, encoded: tuple) -> None: ...

    def send_from_handler(self, dest: int, msg: tuple) -> None:
        """Send from a message handler a message that may wait for its receiver."""

    def submit(self, job: Callable[[], None]) -> None:
        """Run `job` on a serve thread."""

    def kick(self) -> None:
        """Wake a backing-off poller: there is local work."""

    def poll(self) -> None:
        """Receive and handle what has arrived, if no other thread is polling."""

    def wait(self, done: Callable[[], bool], arm: Callable[[Callable[[], None]], None] | None,
             deadline: float | None) -> bool:
        """Poll until done() or the deadline (True if done); in an instance, raises
        `InstanceTornDown` if the instance is ended meanwhile."""

    def request(self, msg: tuple, key: int, timeout: float | None = 60) -> Any:
        """Send `msg` to rank 0 and wait for the Reply carrying `key` (TIMED_OUT at the timeout)."""

    def current_instance(self) -> InstanceContext | None:
        """The instance whose call the calling thread runs, if any."""

    def set_current_instance(self, inst: InstanceContext | None) -> None:
        """The calling (serve) thread runs calls of `inst` now (None: no longer)."""

    def failed_ranks(self) -> Set[int]:
        """Ranks known dead."""

    def driver_is_waiting(self) -> bool:
        """The driver's thread waits inside yrmpi (deadlock detection)."""


class ObjectStore(Protocol):
    """The part of a rank that `ObjectRef` needs: where values live and how they are fetched."""

    def pin(self, ref: Any) -> None: ...

    def ref_from_wire(self, ref_id: int, owner: int) -> Any: ...

    def ensure_fetch(self, ref: Any) -> None: ...


class Installed(Protocol):
    """What the user-facing objects find through `current()`: a rank and its object store."""

    objects: ObjectStore

    def wait(self, done: Callable[[], bool], arm: Callable[[Callable[[], None]], None] | None,
             deadline: float | None) -> bool: ...


TIMED_OUT = object()  # what `Rank.request` returns when no reply came in time

_current: Any = None
_started = False  # a runtime existed in this process (finalize leaves no current one)


def install(rank: Installed | None) -> None:
    """Make `rank` this process's rank (None: the job is over here)."""
    global _current, _started
    _current = rank
    _started = _started or rank is not None


def current() -> Any:
    """This process's rank; every API call but init raises before it exists."""
    if _current is None:
        raise YRRuntimeError("system not initialized")
    return _current


def of_this_job(job: str, what: str) -> Any:
    """This process's rank, if `job` (stamped on a ref or handle when it was pickled) is the
    running job's; a ref or handle pickled in another job is refused at once, never resolved
    to whatever has the same id here."""
    rank = current()
    if job != rank.settings["job_id"]:
        raise YRValueError(f"this {what} belongs to another job (job {job}; this is job {rank.settings['job_id']}): "
                           "refs and handles are valid only in the job that made them; pass the value instead")
    return rank


def active() -> Any:
    return _current


def ever_started() -> bool:
    return _started
