"""The serving side of the wire: instances living on this rank and the calls they run.

Each instance has a mailbox. A call is queued there and run by a serve thread (see
progress.py); an instance runs `concurrency` calls at once (default 1: one at a time, in the
order its callers submitted them). Its mirror is caller.py.

Ending an instance is immediate for everyone else: queued calls fail, the scheduler ends the
instances it owns. A call still running is interrupted: at once if it waits inside yrmpi
(`yr.get`, a collective), at the next Python line otherwise. A call stuck in native code
cannot be interrupted; the rank is "draining" and its capacity returns when the call does.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

import cloudpickle

from ..core import errors
from ..core.errors import InstanceExit, InstanceExitedError, YRRuntimeError, error_info
from ..core.groups import call_failed
from ..core.messages import RESULT, Call, Construct, Drained, Ended, Probe, ProbeResult, Result, Terminate
from ..core.rank import Rank
from ..core.refs import ObjectRef, get
from ..transport.interrupt import InstanceTornDown, interrupt, run_interruptible
from ..transport.pickling import loads
from .asynchronous import InstanceLoop, async_methods

GONE_REMEMBERED = 10_000
GRACE_PERIOD_S = 5.0  # what an instance's __yr_shutdown__ hook is given to finish
log = logging.getLogger("yrmpi")


class Instance:
    def __init__(self, iid: int, cls_name: str, owner: int | None, creator: int, options: dict) -> None:
        self.iid = iid
        self.cls_name = cls_name
        self.owner = owner
        self.creator = creator
        self.concurrency: int = options.get("concurrency", 1)
        self.oneshot: bool = options.get("oneshot", False)
        self.env: dict | None = options.get("env")  # in os.environ while its code runs (with INSTANCE_ID)
        self.async_methods: frozenset[str] = frozenset()  # its `async def` methods (asynchronous.py)
        self.async_limit: int = options.get("async_limit", 0)  # of those, how many run at once (0: no cap)
        self.loop: Any = None  # the event loop they run on, started by the first such call
        self.obj: Any = None
        self.constructed = False
        self.queue: deque[tuple] = deque()
        self.running = 0
        self.threads: set[int] = set()  # threads running this instance's code (see interrupt.py)
        self.waiting: set[int] = set()  # of those, the ones inside yrmpi (a wait, a send)
        self.ended: tuple | None = None  # error info once ended
        self.announced = False  # the scheduler was told it ended
        self.lock = threading.Lock()

    @property
    def label(self) -> str:
        return f"{self.cls_name} instance {self.iid:x}"


class Host:
    def __init__(self, here: Rank) -> None:
        self.here = here
        self.instances: dict[int, Instance] = {}
        self.draining: dict[int, Instance] = {}
        self.classes: dict[tuple[int, str], type] = {}
        self.early: dict[int, list[tuple]] = {}  # calls that overtook their constructor
        self.gone: dict[int, tuple] = {}  # ended instances: error info for late callers
        self.origin = f"rank {here.rank} on {socket.gethostname()}, pid {os.getpid()}"
        _forked[0] = False  # this process serves (a fork before that, a launcher's, does not count)

    # -- messages --------------------------------------------------------------------------
    def handlers(self) -> dict[type, Callable[..., None]]:
        return {Construct: self.on_construct, Call: self.on_call, Terminate: self.on_terminate, Probe: self.on_probe}

    def on_construct(
        self, iid: int, owner: int | None, creator: int, cls_key: str, blob: bytes | None,
        init_blob: bytes, options: dict,
    ) -> None:
        key = (creator, cls_key)
        self.gone.pop(iid, None)  # a recovered instance comes back under its id
        try:
            if blob is not None:
                self.classes[key] = cloudpickle.loads(blob)
            cls = self.classes[key]
        except Exception as exc:  # e.g. a module the driver imported that this rank cannot find
            inst = Instance(iid, options.get("label") or "instance", owner, creator, options)
            self.instances[iid] = inst
            for call in self.early.pop(iid, ()):
                inst.queue.append(call)
            err = YRRuntimeError(f"rank {self.here.rank} cannot load the class of {inst.label}: {exc!r}; "
                                 "make its module importable on every rank (PYTHONPATH, or next to the script)")
            self._end(inst, err, run_hook=False, reason=str(err))
            return
        inst = Instance(iid, options.get("label") or cls.__qualname__, owner, creator, options)
        self.instances[iid] = inst
        inst.queue.append(("__init__", cls, init_blob))
        for call in self.early.pop(iid, ()):
            inst.queue.append(call)
        self._schedule(inst)

    def on_call(
        self, call_id: int, caller: int, iid: int, method: str, args: tuple, kwargs: dict, nret: int
    ) -> None:
        call = (call_id, caller, method, args, kwargs, nret)
        inst = self.instances.get(iid)
        if inst is None:
            if iid in self.gone:
                self.here.send(caller, Result(call_id, False, self.gone[iid]))
            else:
                self.early.setdefault(iid, []).append(call)
            return
        with inst.lock:
            if inst.ended is None:
                inst.queue.append(call)
                self._schedule_locked(inst)
                return
        self.here.send(caller, Result(call_id, False, inst.ended))

    def on_terminate(self, iid: int, reason: str, graceful: bool) -> None:
        inst = self.instances.get(iid)
        if inst is None:
            self.early.pop(iid, None)
            if iid not in self.gone:
                self._remember_gone(iid, error_info(InstanceExitedError(reason), self.origin))
                self.here.send(0, Ended(iid, errors.ERR_INSTANCE_EXITED, reason, False))
            return
        if graceful:  # after the calls already queued, like one more call
            with inst.lock:
                inst.queue.append(("__end__", reason))
                self._schedule_locked(inst)
            return
        self._end(inst, InstanceExitedError(f"{inst.label} was terminated: {reason}"), run_hook=True)

    def on_probe(self, probe_id: int) -> None:
        """Report, per instance, calls running outside a yrmpi wait (deadlock detection)."""
        state = {}
        for inst in list(self.instances.values()):
            state[inst.iid] = (len(inst.threads) - len(inst.waiting), len(inst.waiting), len(inst.queue))
        self.here.send(0, ProbeResult(probe_id, self.here.rank, state))

    def shutdown(self) -> None:
        for inst in list(self.instances.values()):
            self._end(inst, InstanceExitedError("the job is finishing (yr.finalize)"), run_hook=True,
                      notify=False)

    # -- execution -------------------------------------------------------------------------
    def _schedule(self, inst: Instance) -> None:
        with inst.lock:
            self._schedule_locked(inst)

    def _schedule_locked(self, inst: Instance) -> None:
        limit = inst.concurrency if inst.constructed else 1
        if inst.queue and inst.running < limit:
            inst.running += 1
            self.here.submit(partial(self._drain, inst))

    def _drain(self, inst: Instance) -> None:
        """Run queued calls of one instance until its queue is empty (on a serve thread)."""
        self.here.set_current_instance(inst)
        try:
            with inst.lock:
                while inst.queue and inst.ended is None:
                    item = inst.queue.popleft()
                    inst.lock.release()
                    try:
                        if _env_now[0] != inst.iid:  # (the check of _switch_env, inline: on every call)
                            _switch_env(inst)
                        self._run(inst, item)
                    finally:
                        inst.lock.acquire()
                    if item[0] == "__init__":
                        self._schedule_locked(inst)  # constructed: `concurrency` calls may run now
                inst.running -= 1
        finally:
            self.here.set_current_instance(None)
        self._report_drained(inst)

    def _run(self, inst: Instance, item: tuple) -> None:
        if item[0] == "__init__":
            self._construct(inst, *item[1:])
            return
        if item[0] == "__end__":
            self._end(inst, InstanceExitedError(f"{inst.label} was terminated: {item[1]}"), run_hook=True)
            return
        call_id, caller, method, args, kwargs, nret = item
        if method in inst.async_methods:
            self._run_async(inst, call_id, caller, method, args, kwargs, nret)
            return
        try:
            value = run_interruptible(inst, _call_resolved, getattr(inst.obj, method), args, kwargs)
            if nret == 0:
                value = None
            try:
                self.here.send(caller, (RESULT, call_id, True, value))  # a Result, as it travels
            except Exception as exc:
                raise YRRuntimeError(f"the result of {inst.cls_name}.{method} cannot be pickled: {exc}") from exc
        except (InstanceExit, SystemExit) as exc:  # sys.exit() in a call ends the instance, not the rank
            how = "yr.exit()" if isinstance(exc, InstanceExit) else f"sys.exit({exc.code!r})"
            err = InstanceExitedError(f"{inst.label} called {how}")
            self.here.send(caller, Result(call_id, False, error_info(err, self.origin)))
            self._end(inst, err, run_hook=False)
            return
        except InstanceTornDown:
            self.here.send(caller, Result(call_id, False, inst.ended))
            return
        except BaseException as exc:  # (any other: a serve thread never dies of a call)
            where = f"{inst.cls_name}.{method}, {inst.label} on {self.origin}"
            self.here.send(caller, Result(call_id, False, error_info(exc, self._origin(inst), where)))
            call_failed(self.here, inst, exc)  # after the result: the caller hears the cause first
        if inst.oneshot:
            self._end(inst, InstanceExitedError(f"{inst.label} finished"), run_hook=False)

    def _construct(self, inst: Instance, cls: type, init_blob: bytes) -> None:
        try:
            inst.obj = run_interruptible(inst, _call_resolved, cls, *loads(init_blob))
        except InstanceTornDown:
            return
        except BaseException as exc:
            info = error_info(exc, self._origin(inst), f"{inst.cls_name}.__init__, {inst.label} on {self.origin}")
            self._end(inst, None, run_hook=False, info=info, reason=f"constructor raised {exc!r}")
            return
        inst.constructed = True
        inst.async_methods = async_methods(type(inst.obj))

    def _run_async(
        self, inst: Instance, call_id: int, caller: int, method: str, args: tuple, kwargs: dict, nret: int
    ) -> None:
        """An `async def` method: its arguments resolved here, then it runs on the instance's
        event loop, and the mailbox goes on; its result is sent from the loop's thread."""
        try:
            args, kwargs = run_interruptible(inst, _resolve_refs, args, kwargs)
        except InstanceTornDown:
            self.here.send(caller, Result(call_id, False, inst.ended))
            return
        except BaseException as exc:
            self.here.send(caller, Result(call_id, False, error_info(exc, self._origin(inst))))
            return
        if inst.loop is None:
            inst.loop = InstanceLoop(inst.label, partial(self.here.set_current_instance, inst), inst.async_limit)

        def done(ok: bool, value: Any) -> None:
            if not ok and inst.ended is not None:
                msg = Result(call_id, False, inst.ended)
            elif ok:
                msg = (RESULT, call_id, True, None if nret == 0 else value)  # a Result, as it travels
            else:
                where = f"{inst.cls_name}.{method}, {inst.label} on {self.origin}"
                msg = Result(call_id, False, error_info(value, self._origin(inst), where))
            try:
                self.here.send(caller, msg)
            except Exception as exc:  # a result that cannot be pickled
                err = YRRuntimeError(f"the result of {inst.cls_name}.{method} cannot be pickled: {exc}")
                self.here.send(caller, Result(call_id, False, error_info(err, self.origin)))

        inst.loop.submit(getattr(inst.obj, method), args, kwargs, done)

    def _origin(self, inst: Instance) -> str:
        return f"{inst.label}, {self.origin}"

    def _end(
        self, inst: Instance, error: BaseException | None, run_hook: bool, info: tuple | None = None,
        reason: str | None = None, notify: bool = True,
    ) -> None:
        """End an instance: fail its queued calls, interrupt running ones, run its hook, tell
        the scheduler. Capacity stays reserved until every running call has returned."""
        info = info or error_info(error, self.origin)
        me = threading.get_ident()
        with inst.lock:
            if inst.ended is not None:
                return
            inst.ended = info
            queued, inst.queue = list(inst.queue), deque()
            others = interrupt(inst, me)  # waits inside yrmpi notice by themselves
        self.instances.pop(inst.iid, None)
        self._remember_gone(inst.iid, info)
        if inst.loop is not None:
            inst.loop.stop()  # its async calls still running answer with the instance's end
        for item in queued:
            if item[0] not in ("__init__", "__end__"):
                self.here.send(item[1], Result(item[0], False, info))
        hook = getattr(inst.obj, "__yr_shutdown__", None) if run_hook and inst.constructed else None
        if hook is not None:
            try:
                hook(GRACE_PERIOD_S)
            except Exception as exc:
                log.warning("%s: __yr_shutdown__ raised %r", inst.label, exc)
        if not others:
            inst.obj = None
        if notify:
            draining = bool(others)
            if draining:
                self.draining[inst.iid] = inst
            self.here.send(0, Ended(inst.iid, errors.ERR_INSTANCE_EXITED, reason or str(error), draining))
            with inst.lock:
                inst.announced = True
            if draining:  # its calls may have returned meanwhile; "drained" must follow "ended"
                self._report_drained(inst)

    def _remember_gone(self, iid: int, info: tuple) -> None:
        """Late callers of an ended instance get its error; the oldest are forgotten first."""
        self.gone[iid] = info
        if len(self.gone) > GONE_REMEMBERED:
            del self.gone[next(iter(self.gone))]

    def _report_drained(self, inst: Instance) -> None:
        """After the scheduler heard that the instance ended while calls still ran: the last
        one has returned, its capacity is free. Whichever thread sees it last reports it."""
        if inst.ended is None:  # (set once, never cleared: no lock needed to see it unset)
            return
        with inst.lock:
            if not inst.announced or inst.threads:
                return
        if self.draining.pop(inst.iid, None) is not None:  # (one pop wins: reported once)
            inst.obj = None
            self.here.send(0, Drained(inst.iid))


def _call_resolved(fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    """The instance's code: its arguments' refs resolved (a wait), then the call."""
    args, kwargs = _resolve_refs(args, kwargs)
    try:
        value = fn(*args, **kwargs)
    except BaseException:
        if _forked[0]:
            _exit_forked(1)
        raise
    if _forked[0]:
        _exit_forked(0)
    return value


_forked = [False]  # True in a child forked from the serving process (no getpid() on every call)
os.register_at_fork(after_in_child=lambda: _forked.__setitem__(0, True))


def _exit_forked(code: int) -> None:
    """A process forked inside a call that returns into yrmpi must not touch MPI: its copy of
    the rank's MPI state would corrupt the job (rank 0 crashed on its messages). It ends here."""
    os.write(2, b"yrmpi: a process forked inside an instance's call returned into yrmpi; it exits "
                b"(end forked children with os._exit)\n")
    os._exit(code)


def _resolve_refs(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """ObjectRefs passed as top-level arguments become their values before the call runs. Refs
    nested in lists, tuples and dicts stay refs, but are dependencies, as in yr: the call waits
    for them, and one that failed fails the call."""
    for value in args:  # (a plain loop: this runs on every call)
        if isinstance(value, ObjectRef) or type(value) in _CONTAINERS:
            break
    else:
        if not kwargs or not any(isinstance(v, ObjectRef) or type(v) in _CONTAINERS for v in kwargs.values()):
            return args, kwargs
    nested = _nested_refs(args, kwargs)
    if nested:
        get(nested, timeout=-1)
    if not any(isinstance(a, ObjectRef) for a in args) and not any(
            isinstance(v, ObjectRef) for v in kwargs.values()):
        return args, kwargs
    args = tuple(get(a, timeout=-1) if isinstance(a, ObjectRef) else a for a in args)
    kwargs = {k: get(v, timeout=-1) if isinstance(v, ObjectRef) else v for k, v in kwargs.items()}
    return args, kwargs


_CONTAINERS = (list, tuple, dict, set, frozenset)
_NESTED_SCAN_LIMIT = 10_000  # items looked at per call, at most


def _nested_refs(args: tuple, kwargs: dict) -> list:
    """The ObjectRefs inside the containers among the arguments (not the top-level ones)."""
    found: list = []
    budget = [_NESTED_SCAN_LIMIT]

    def scan(value: object, depth: int) -> None:
        if budget[0] <= 0 or depth > 4:
            return
        items = value.values() if type(value) is dict else value
        for item in items:  # type: ignore[union-attr]
            budget[0] -= 1
            if isinstance(item, ObjectRef):
                found.append(item)
            elif type(item) in _CONTAINERS:
                scan(item, depth + 1)
            if budget[0] <= 0:
                return

    for value in (*args, *kwargs.values()):
        if type(value) in _CONTAINERS:
            scan(value, 1)
    return list({id(r): r for r in found}.values())


_env_now: list = [None]  # the instance whose environment os.environ holds (an iid)
_env_saved: dict[str, str | None] = {}  # what os.environ had before, for the keys it changed


def _switch_env(inst: Instance) -> None:
    """Give os.environ the environment of the instance whose code runs next: INSTANCE_ID and
    its env_vars / Config.custom_envs (the previous instance's are undone first). One
    process serves every instance of a rank: concurrent instances on one rank share it. (Called
    only when another instance's environment is in place: the check is at the call site.)"""
    for key, old in _env_saved.items():
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old
    _env_saved.clear()
    env = {"INSTANCE_ID": f"{inst.iid:x}"}
    if inst.env:
        env.update(inst.env)
    for key, value in env.items():
        _env_saved[key] = os.environ.get(key)
        os.environ[key] = value
    _env_now[0] = inst.iid
