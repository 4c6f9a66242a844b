"""Interrupting the running calls of an ended instance, without ever interrupting yrmpi.

Ending an instance raises `InstanceTornDown` in the threads running its calls: an asynchronous
exception, which Python delivers at the thread's next line, wherever that is. It must land in
the instance's own code: landing in a poll, it could drop a message or keep the polling lock,
and landing in a serve thread after the call returned, it would end that thread. So, for each
instance (`Instance.threads`, `.waiting`, `.ended`, `.lock`):

- a thread is in `threads` only while it runs the instance's code (`run_interruptible`);
- inside yrmpi (a wait, a send) it is also in `waiting` (`Shield`): not interrupted there,
  the wait notices the end by itself;
- the ending thread interrupts `threads - waiting` while holding the lock (`interrupt`);
- a thread leaving the instance's code, or entering yrmpi from it, first clears an
  interruption that was raised but not delivered yet; it takes the lock to do so, so none
  can be raised after it has cleared.

An interruption raised once per thread and instance is delivered at most once: where it
lands in this module, it is caught and the step retried.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from typing import Any, Protocol


class InstanceTornDown(BaseException):
    """Raised inside a running call of an instance that was ended (terminated, owner gone).

    A BaseException, so `except Exception` in user code does not swallow the teardown."""


class Interruptible(Protocol):
    threads: set[int]
    waiting: set[int]
    ended: Any
    lock: threading.Lock


def run_interruptible(inst: Interruptible, fn: Callable[..., Any], *args: Any) -> Any:
    """Run the instance's code `fn(*args)` where ending the instance interrupts it."""
    me = threading.get_ident()
    try:
        inst.threads.add(me)
        if inst.ended is not None:  # ended before the add: it may not have interrupted this thread
            raise InstanceTornDown()
        return fn(*args)
    finally:
        while True:
            try:
                _leave(inst, me)
                break
            except InstanceTornDown:
                pass  # raised as the call returned: it is over all the same


def _leave(inst: Interruptible, me: int) -> None:
    inst.threads.discard(me)
    if inst.ended is not None:
        _clear_raised(inst, me)


def interrupt(inst: Interruptible, me: int) -> list[int]:
    """Interrupt the threads running the instance's code (but `me`). Hold `inst.lock`, with
    `inst.ended` already set. Returns every thread still inside a call of the instance."""
    others = [t for t in inst.threads.copy() if t != me]  # (copy: atomic; threads come and go lock-free)
    for ident in others:
        if ident not in inst.waiting:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(InstanceTornDown))
    return others


def _clear_raised(inst: Interruptible, me: int) -> None:
    """Drop an interruption raised in this thread but not delivered yet (taking the lock: any
    `interrupt` is complete, and none comes after, since this thread has left `threads` or
    entered `waiting`)."""
    with inst.lock:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(me), None)


class Shield:
    """`with Shield(inst):` around yrmpi code called from the instance's code: no
    interruption lands inside; leaving it into an ended instance raises InstanceTornDown."""

    __slots__ = ("inst", "me")

    def __init__(self, inst: Interruptible | None) -> None:
        self.inst = inst
        self.me = 0

    def __enter__(self) -> None:
        inst = self.inst
        if inst is None:
            return
        me = threading.get_ident()
        if me not in inst.threads or me in inst.waiting:
            return  # not in the instance's code (a serve thread sending a result), or nested
        try:
            inst.waiting.add(me)
            self.me = me
            if inst.ended is not None:
                _clear_raised(inst, me)
        except InstanceTornDown:
            inst.waiting.discard(me)
            self.me = 0
            raise

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        if not self.me:
            return
        self.inst.waiting.discard(self.me)
        if exc_type is None and self.inst.ended is not None:
            raise InstanceTornDown()
