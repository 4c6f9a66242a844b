"""`ray.exceptions` on yrmpi: the classes Ray programs catch, and the mapping from yrmpi's errors.

`RayTaskError` wraps the exception a task or actor method raised and, as in Ray, the instance
`ray.get` raises is also an instance of the user's class (`except ValueError` works). yrmpi's own
errors map onto Ray's: an instance that ended -> `RayActorError` (`ActorDiedError`), a task whose
rank died -> `WorkerCrashedError`, a timed-out `get` -> `GetTimeoutError`, a cancelled call ->
`TaskCancelledError`.
"""

from __future__ import annotations

from typing import Any

import yrmpi as yr

__all__ = [
    "ActorDiedError", "ActorUnavailableError", "GetTimeoutError", "ObjectLostError", "OutOfMemoryError",
    "RayActorError", "RayError", "RaySystemError", "RayTaskError", "TaskCancelledError", "WorkerCrashedError",
    "UnsupportedError", "from_yrmpi",
]


class RayError(Exception):
    """Base of the Ray exceptions."""


class RaySystemError(RayError):
    """The runtime failed (not the user's code)."""

    def __init__(self, client_exc: Any = "", traceback_str: str | None = None) -> None:
        super().__init__(str(client_exc))
        self.client_exc = client_exc
        self.traceback_str = traceback_str


class UnsupportedError(RayError, NotImplementedError, AttributeError):
    """A part of Ray that yrmpi does not offer; the message names the alternative. Also an
    AttributeError, so `hasattr(ray, "serve")` is False."""


class RayTaskError(RayError):
    """A task or actor method raised: `cause` is the user's exception. `ray.get` raises a
    subclass that is also of the cause's class (`as_instanceof_cause`)."""

    def __init__(self, function_name: str = "", traceback_str: str = "", cause: BaseException | None = None,
                 proctitle: str | None = None, pid: int | None = None, ip: str | None = None,
                 actor_repr: str | None = None, actor_id: str | None = None) -> None:
        self.function_name = function_name
        self.traceback_str = traceback_str
        self.cause = cause
        self.proctitle = proctitle or f"ray::{function_name}"
        self.pid = pid
        self.ip = ip
        self.actor_repr = actor_repr
        self.actor_id = actor_id
        Exception.__init__(self, self._message())

    def _message(self) -> str:
        where = ", ".join(f"{k}={v}" for k, v in (("pid", self.pid), ("ip", self.ip)) if v is not None)
        head = f"{self.proctitle}()" + (f" ({where})" if where else "")
        body = self.traceback_str.rstrip() or f"{type(self.cause).__name__}: {self.cause}"
        return f"{head}\n{body}"

    def __str__(self) -> str:
        return self._message()

    def as_instanceof_cause(self) -> RayTaskError:
        """This error as an instance of both RayTaskError and the cause's class (as Ray does)."""
        cause = self.cause
        if cause is None or isinstance(cause, RayError) or not isinstance(cause, Exception):
            return self
        cls = _derived(type(cause))
        if cls is None:
            return self
        err = cls.__new__(cls)
        err.__dict__.update(self.__dict__)
        err.args = (self._message(),)
        return err

    def __reduce__(self) -> tuple:
        return (_rebuild_task_error, (self.function_name, self.traceback_str, self.cause, self.proctitle,
                                      self.pid, self.ip, self.actor_repr, self.actor_id))


def _rebuild_task_error(*args: Any) -> RayTaskError:
    return RayTaskError(*args).as_instanceof_cause()


_derived_classes: dict[type, type | None] = {}


def _derived(base: type) -> type | None:
    if base not in _derived_classes:
        try:
            cls = type(f"RayTaskError({base.__name__})", (RayTaskError, base),
                       {"__init__": RayTaskError.__init__, "__str__": RayTaskError.__str__,
                        "__reduce__": RayTaskError.__reduce__, "__module__": __name__})
        except TypeError:  # a C exception type whose layout cannot be combined
            cls = None
        _derived_classes[base] = cls
    return _derived_classes[base]


class RayActorError(RayError):
    """The actor died (killed, its owner ended, its process died, its constructor raised) before
    or while running this call."""

    def __init__(self, actor_id: str | None = None, error_msg: str = "The actor died unexpectedly before "
                 "finishing this task.", actor_init_failed: bool = False, preempted: bool = False) -> None:
        super().__init__(error_msg)
        self.actor_id = actor_id
        self.error_msg = error_msg
        self.actor_init_failed = actor_init_failed
        self.preempted = preempted

    def __str__(self) -> str:
        return self.error_msg


class ActorDiedError(RayActorError):
    """The actor is dead (what `ray.get` raises for a call of a dead actor)."""


class ActorUnavailableError(RayActorError):
    """The actor is temporarily unreachable (restarting)."""


class WorkerCrashedError(RayError):
    """A task's process died while it ran, and its `max_retries` were used up; yrmpi's reason
    (which rank died) follows Ray's words."""

    def __str__(self) -> str:
        detail = f" ({self.args[0]})" if self.args else ""
        return f"The worker died unexpectedly while executing this task.{detail}"


class TaskCancelledError(RayError):
    def __init__(self, task_id: Any = None, error_message: str | None = None) -> None:
        super().__init__(error_message or "This task or its dependency was cancelled by")
        self.task_id = task_id
        self.error_message = error_message

    def __str__(self) -> str:
        if self.error_message:
            return self.error_message
        return "This task or its dependency was cancelled by" + (f" {self.task_id}" if self.task_id else "")


class GetTimeoutError(RayError, TimeoutError):
    """`ray.get` ran out of time."""


class ObjectLostError(RayError):
    """The value of a ref is lost (the rank that held it died)."""


class OutOfMemoryError(RayError):
    """A task or actor ran out of memory (a MemoryError in its code)."""


# -- yrmpi's errors in Ray's words ---------------------------------------------------------------
def from_yrmpi(exc: BaseException, actor_id: str | None = None) -> BaseException:
    """The Ray exception for an error raised by yrmpi's API; anything else is returned as it is."""
    if isinstance(exc, RayError):
        return exc
    if isinstance(exc, yr.YRInvokeError):
        cause = exc.cause
        if isinstance(cause, RayError):  # re-raised by an actor that called ray.get itself
            return cause
        if isinstance(cause, yr.YRError):
            return from_yrmpi(cause)
        origin = exc.origin or ""
        name, pid, ip = _origin_parts(origin, exc.remote_traceback)
        if name.endswith(".__init__"):  # the constructor raised: Ray reports the actor as dead
            task = RayTaskError(name, exc.remote_traceback, cause if cause is not None else exc, pid=pid, ip=ip)
            return ActorDiedError(actor_id, "The actor died because of an error raised in its creation task, "
                                  f"{task}", actor_init_failed=True)
        if isinstance(cause, MemoryError):
            return OutOfMemoryError(f"Task {name} ran out of memory: {cause}")
        return RayTaskError(name, exc.remote_traceback, cause if cause is not None else exc,
                            pid=pid, ip=ip).as_instanceof_cause()
    if isinstance(exc, yr.YRTimeoutError):
        return GetTimeoutError(f"Get timed out: some object(s) not ready. ({exc})")
    if isinstance(exc, yr.CancelError):
        return TaskCancelledError(error_message=f"This task or its dependency was cancelled ({exc})")
    if getattr(exc, "rank_died", False) and exc.stateless:
        return WorkerCrashedError(str(exc))
    if isinstance(exc, yr.InstanceExitedError):
        msg = str(exc)
        if "killed by yr.kill_instance" in msg or "terminated" in msg:
            text = f"The actor is dead because it was killed by `ray.kill`. ({msg})"
        else:
            text = f"The actor died unexpectedly before finishing this task. ({msg})"
        return ActorDiedError(actor_id, text)
    return exc


def _origin_parts(origin: str, traceback_text: str = "") -> tuple[str, int | None, str | None]:
    """(called name, pid, host) from yrmpi's origin ("Cls instance 1f, rank R on host, pid P") and
    the traceback's line "[yrmpi: called Cls.method, ...]"."""
    name = origin.split(" ")[0] if origin else "task"
    if name == "yrmpi:task":
        name = "task"
    marker = "[yrmpi: called "
    if marker in traceback_text:
        name = traceback_text.split(marker, 1)[1].split(",", 1)[0].split("]", 1)[0]
    name = name.replace("_Task.run", "task")
    pid = host = None
    if ", pid " in origin:
        head, tail = origin.rsplit(", pid ", 1)
        try:
            pid = int(tail.split()[0].strip(")"))
        except (ValueError, IndexError):
            pid = None
        host = head.rsplit(" on ", 1)[-1]
    return name, pid, host
