"""The error classes of the yr API, with the SDK's numeric codes.

A remote user exception comes back as a `YRInvokeError` that is also an instance of the
original exception class, so `except ValueError` works in the caller.
"""

from __future__ import annotations

import builtins
import os
import traceback
import types

import cloudpickle

ERR_PARAM_INVALID = 1001
ERR_RESOURCE_NOT_ENOUGH = 1002
ERR_INSTANCE_NOT_FOUND = 1003
ERR_RESOURCE_CONFIG_ERROR = 1006  # invalid resource parameter (an undeclared custom resource)
ERR_INSTANCE_EXITED = 1007
ERR_USER_FUNCTION_EXCEPTION = 2002


class YRError(Exception):
    """Base of every yrmpi error; `code` is the SDK's numeric code where one exists."""

    code: int = 0

    def __init__(self, message: str = "", code: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class YRRuntimeError(YRError, RuntimeError):
    """The runtime cannot do what was asked (not initialised, instance gone, ...)."""


class YRTimeoutError(YRRuntimeError, TimeoutError):
    """A `get`, a creation or a named-instance lookup ran out of time."""


class YRValueError(YRError, ValueError):
    code = ERR_PARAM_INVALID


class YRTypeError(YRError, TypeError):
    code = ERR_PARAM_INVALID


class CancelError(YRError, RuntimeError):
    """The call was cancelled before it started."""


class ResourceError(YRRuntimeError):
    """A request that no rank can hold, or that found no room in time (code 1002)."""

    code = ERR_RESOURCE_NOT_ENOUGH


class InstanceExitedError(YRRuntimeError):
    """The instance ended (terminated, crashed, its owner ended) before the call finished."""

    code = ERR_INSTANCE_EXITED
    rank_died = False  # (see rank_died)
    stateless = False


def rank_died(message: str, code: int | None = None, stateless: bool = False) -> InstanceExitedError:
    """What calls in flight get when their instance died with its rank (a process failure): an
    InstanceExitedError, as yr says, marked `rank_died` so that a retry policy can tell a crash
    from the user's exception (Ray retries tasks on crashes); `stateless`: the instance ran a
    stateless call (Ray: the worker crashed, not an actor)."""
    err = InstanceExitedError(message, code)
    err.rank_died, err.stateless = True, stateless
    return err


class DeadlockError(ResourceError):
    """Every unit of capacity is held by instances that wait for creations that cannot fit."""


class YRInvokeError(YRError, RuntimeError):
    """A user function raised. Also an instance of the original exception class."""

    code = ERR_USER_FUNCTION_EXCEPTION
    cause: BaseException | None = None
    remote_traceback: str = ""
    origin: str = ""

    def __str__(self) -> str:
        head = super().__str__()
        if self.remote_traceback:
            return f"{head}\n\nRemote traceback ({self.origin}):\n{self.remote_traceback}"
        return head


_invoke_error_classes: dict[type, type] = {}


def invoke_error(
    cause: BaseException | None, type_name: str, message: str, remote_tb: str, origin: str
) -> YRInvokeError:
    """Build the caller-side error for a remote exception: subclass of both classes when possible."""
    base = type(cause) if cause is not None else getattr(builtins, type_name, None)
    cls: type = YRInvokeError
    if isinstance(base, type) and issubclass(base, Exception) and not issubclass(base, YRError):
        cls = _invoke_error_classes.get(base) or _derive(base)
    err = BaseException.__new__(cls)
    err.args = (f"{type_name}: {message}",)
    err.cause = cause
    err.remote_traceback = remote_tb
    err.origin = origin
    err.__cause__ = None
    return err


def _derive(base: type) -> type:
    try:
        cls = type(f"YRInvokeError[{base.__name__}]", (YRInvokeError, base), {"__str__": YRInvokeError.__str__})
    except TypeError:  # incompatible layouts (some C exception types): fall back to the plain class
        cls = YRInvokeError
    _invoke_error_classes[base] = cls
    return cls


class InstanceExit(BaseException):
    """Raised by `yr.exit()` inside an instance: end this instance (and its children)."""


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep  # yrmpi/


def _internal(frame: traceback.FrameSummary) -> bool:
    return frame.filename.startswith(_PACKAGE)


def _trim(te: traceback.TracebackException, seen: set[int]) -> None:
    """Drop yrmpi's frames around the user's: the leading ones (host, interrupt) all, the
    trailing ones but the first (the yrmpi function the user called), in the whole chain."""
    if id(te) in seen:
        return
    seen.add(id(te))
    frames = list(te.stack)
    start = 0
    while start < len(frames) and _internal(frames[start]):
        start += 1
    if start == len(frames):  # only yrmpi frames (an error of the runtime itself): keep them
        start = 0
    end = len(frames)
    while end > start + 1 and _internal(frames[end - 1]) and _internal(frames[end - 2]):
        end -= 1
    te.stack = traceback.StackSummary.from_list(frames[start:end])
    for other in (te.__cause__, te.__context__):
        if other is not None:
            _trim(other, seen)


def remote_traceback(exc: BaseException, where: str | None = None) -> str:
    """The traceback a caller reads: the user's frames with their files and source lines, and
    one line for where the call ran instead of yrmpi's own frames."""
    try:
        te = traceback.TracebackException(type(exc), exc, exc.__traceback__, compact=True)
        _trim(te, set())
        text = "".join(te.format())
    except Exception:  # never lose the error over its formatting
        return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if where:
        head = "Traceback (most recent call last):\n"
        at = text.rfind(head)  # the outermost traceback is printed last
        if at >= 0:
            cut = at + len(head)
            text = f"{text[:cut]}  [yrmpi: called {where}]\n{text[cut:]}"
    return text


def error_info(exc: BaseException, origin: str, where: str | None = None) -> tuple:
    """A picklable description of an exception that crosses the wire (a Result's payload).
    `where`: the call it came from, for the traceback (`remote_traceback`)."""
    try:
        blob = cloudpickle.dumps(exc)
    except Exception:
        blob = None
    tb = remote_traceback(exc, where)
    code = getattr(exc, "code", 0) if isinstance(exc, YRError) else 0
    return (type(exc).__name__, str(exc), tb, origin, blob, code)


def error_from_info(info: tuple) -> BaseException:
    """The caller-side exception for an `error_info`: a runtime error stays what it is (class
    and code); a user exception becomes a YRInvokeError that is also of the user's class."""
    type_name, message, tb, origin, blob, code = info
    cause = None
    if blob is not None:
        try:
            cause = cloudpickle.loads(blob)
        except Exception:
            cause = None
    if isinstance(cause, YRError):
        return cause
    return invoke_error(cause, type_name, message, tb, origin)


def _keep_code_filenames() -> None:
    """Classes and functions sent by value (cloudpickle) keep their `co_filename`: cloudpickle
    replaces it with "<dynamic-code>", and a remote traceback then shows no file and no source
    line. With the real name, the rank reads the source where the file is readable there."""
    pickler = getattr(getattr(cloudpickle, "cloudpickle", None), "Pickler", None)
    table = getattr(pickler, "_dispatch_table", None)
    original = table.get(types.CodeType) if isinstance(table, dict) else None
    if original is None or getattr(original, "keeps_filename", False):
        return

    def reduce_code(code: types.CodeType) -> tuple:
        ctor, args = original(code)[:2]
        args = tuple(code.co_filename if a == "<dynamic-code>" else a for a in args)
        return ctor, args

    reduce_code.keeps_filename = True  # type: ignore[attr-defined]
    table[types.CodeType] = reduce_code


_keep_code_filenames()
