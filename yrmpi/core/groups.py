"""Communicator groups: what the members (`yrmpi.collective`) and the registry on rank 0
(`yrmpi.scheduling.groups`) both speak.

- A group id travels in every group message: `("cls", owner, class label)` for the implicit
  group of one owner's instances of one class, `("named", owner, name)` for one that
  `create_group` made. The owner is an instance id, or None for the driver.
- A failure travels as a kind name (`ABSENT`, `CHANGED`, `MISMATCH`, `FAILED`); the members
  turn it into an error class of their own.
- A member whose call raised is reported by its host (`call_failed`) to the engine of its
  rank, which the engine registered (`observe_call_failures`): the roles cannot import the
  collective layer above them.
- A call key says what one member called (the collective, then dtype and shape, op, or root);
  the members compare keys locally, the registry compares their recent histories, and both
  describe keys in their error messages the same way.

Pure: no MPI, no numpy (a key's dtype is only ever formatted here).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

CLASS_GROUP = "cls"
NAMED_GROUP = "named"

ABSENT = "absent"  # no such group, or the caller is not a member: NotInGroupError
CHANGED = "changed"  # a member ended or was added, the group was destroyed: GroupChangedError
MISMATCH = "mismatch"  # members called different collectives: CollectiveMismatchError
FAILED = "failed"  # a member's call raised (fail-fast): GroupFailedError

FAILED_CALL = ("failed",)  # the history entry of a call that failed its agreement check


def class_group(owner: int | None, cls_name: str) -> tuple:
    """The implicit group of the instances of `cls_name` that `owner` created."""
    return (CLASS_GROUP, owner, cls_name)


def named_group(owner: int | None, name: str) -> tuple:
    """The group that `owner` made with `create_group(handles, name)`."""
    return (NAMED_GROUP, owner, name)


def group_label(gid: tuple) -> str:
    """A group id for people: "group 'pair' of instance 1a" or "the Worker group of the driver"."""
    kind, owner, name = gid
    by = "the driver" if owner is None else f"instance {owner:x}"
    return f"group {name!r} of {by}" if kind == NAMED_GROUP else f"the {name} group of {by}"


def describe_call(key: tuple) -> str:
    """A call key for people: "allreduce(float64[4], op='sum')", "broadcast(root=1)"."""
    kind = key[0]
    if key == FAILED_CALL:
        return "a call that failed"
    if len(key) >= 3 and not isinstance(key[1], str):  # (kind, dtype, shape[, op]): an array call
        shape = "x".join(str(d) for d in key[2]) or "scalar"
        text = f"{kind}({key[1]}[{shape}]"
        return text + (f", op={key[3]!r})" if len(key) > 3 else ")")
    if kind == "broadcast":
        return f"broadcast(root={key[1]})"
    if len(key) > 2:
        return f"{kind}(object, op={key[2]!r})"
    if len(key) > 1:
        return f"{kind}(object)"
    return f"{kind}()"


_observers: dict[int, Callable[[Any, BaseException], None]] = {}  # id(rank) -> its engine's hook


def observe_call_failures(rank: Any, hook: Callable[[Any, BaseException], None] | None) -> None:
    """The collective engine of `rank` wants to hear of every failed instance call there (None: no more)."""
    if hook is None:
        _observers.pop(id(rank), None)
    else:
        _observers[id(rank)] = hook


def call_failed(rank: Any, inst: Any, exc: BaseException) -> None:
    """A call of `inst` on `rank` raised `exc` (its result already went to the caller)."""
    hook = _observers.get(id(rank))
    if hook is not None:
        hook(inst, exc)
