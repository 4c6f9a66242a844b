"""The errors a member of a group raises; the registry names them by kind (`core.groups`)."""

from __future__ import annotations

from ..core.errors import YRRuntimeError
from ..core.groups import ABSENT, FAILED, MISMATCH


class CollectiveError(YRRuntimeError):
    """A collective could not complete (base class of the errors below)."""


class NotInGroupError(CollectiveError):
    """The caller is not a member of the group it named (or of any group: the driver, a task)."""


class GroupChangedError(CollectiveError):
    """The group was torn down or its membership changed while this member waited in it."""


class GroupFailedError(GroupChangedError):
    """Another member's call raised (or it ended, or its rank died) while this member was in, or
    entered, a collective of the same epoch: the message names that member, its rank and its
    exception. The group re-forms at the next call. A `GroupChangedError` for older handlers."""


class CollectiveMismatchError(CollectiveError, ValueError):
    """Members called different collectives, or with different shapes, dtypes, ops or roots."""


def error_of_kind(kind: str) -> type[CollectiveError]:
    """The error class of a failure kind sent by the registry (unknown kinds: a change)."""
    if kind == ABSENT:
        return NotInGroupError
    if kind == FAILED:
        return GroupFailedError
    return CollectiveMismatchError if kind == MISMATCH else GroupChangedError


def fresh(err: BaseException) -> BaseException:
    """A new exception like `err`, so each thread that raises it gets its own traceback."""
    try:
        return type(err)(*err.args)
    except Exception:
        return err
