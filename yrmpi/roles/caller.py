"""The calling side of the wire: creations, calls, results, handle reference counts.

Every rank is a caller (the driver, and any instance that creates or calls instances).
Creation asks the scheduler on rank 0 for a rank; the creator then sends the constructor and
every call straight to that rank, so calls never pass through rank 0. Its mirror is host.py.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

from ..core import errors
from ..core.affinity import to_wire as affinity_wire
from ..core.errors import (
    CancelError,
    DeadlockError,
    InstanceExitedError,
    ResourceError,
    YRRuntimeError,
    YRTypeError,
    YRValueError,
    error_from_info,
    rank_died,
)
from ..core.messages import (
    CALL,
    Call,
    Construct,
    Create,
    CreateFailed,
    CreateSpec,
    Gone,
    InstanceEnded,
    Kill,
    Locate,
    Moved,
    Placed,
    Ref,
    Result,
    Terminate,
)
from ..core.options import InvokeOptions
from ..core.rank import Rank
from ..core.refs import ObjectRef, Slot, new_ref
from ..transport.pickling import dumps, loads

# Cross-layer needs, wired by the runtime: whether any rank could ever hold a demand (cpu,
# memory, custom) -> the problem or None; and "an instance was created" for the groups.
Unplaceable = Callable[[int, int, dict], "str | None"]
CreatedHook = Callable[["int | None", str, int], None]


@dataclass
class InstanceState:
    """What this rank knows of one instance; shared by all its handles here."""

    iid: int
    cls_name: str
    methods: dict[str, int]
    rank: int | None = None
    owned_here: bool = False
    ended: BaseException | None = None
    pending: list = field(default_factory=list)  # encoded messages waiting for placement
    lock: threading.Lock = field(default_factory=threading.Lock)
    handles: int = 0
    oneshot: bool = False
    detached: bool = False
    owner_rank: int = -1  # the rank holding the owning handle (its creator)
    remote_refs: int = 0  # at the owner: handles sent to other ranks and not yet given back
    received: int = 0  # elsewhere: handles that arrived here, to give back when all are dropped
    init: tuple | None = None  # at the creator: what the constructor needs, to recover the instance
    released: bool = False  # its last handle is gone and the terminate was sent
    forward: InstanceState | None = None  # a shared named instance: the state this rank had first
    recover: int = 0  # recover_retry_times: calls in flight when its rank dies are sent again
    create: Any = None  # the Create message not sent yet (deferred: a yr.Group member)
    env: dict | None = None  # environment while its code runs: Config.custom_envs, the creator's, env_vars
    on_end: list | None = None  # callbacks(state) when it ends (yr.Group's shared fate)


CONSTRUCT = object()  # in an instance's queue of messages waiting for placement: send the constructor here

RetryIf = Callable[[BaseException], bool]  # a stateless call's error -> run it again (while retries are left)


class PendingCall:
    """A call sent and not answered yet (one per call: a plain class with slots, it is cheap)."""

    __slots__ = ("call_id", "refs", "slots", "state", "nret", "resubmit", "retries_left", "retry_if", "encoded")

    def __init__(self, call_id: int, refs: list[ObjectRef], slots: list[Slot], state: InstanceState, nret: int,
                 resubmit: Any = None, retries_left: int = 0, retry_if: RetryIf | None = None) -> None:
        self.call_id = call_id
        self.refs = refs
        self.slots = slots  # the refs' slots, in order
        self.state = state
        self.nret = nret
        self.resubmit = resubmit  # stateless calls: submit(pending) runs the call again, on a new instance
        self.retries_left = retries_left
        self.retry_if = retry_if  # which errors are retried; None: any but a cancel (yr's retry_times)
        self.encoded: tuple | None = None  # kept for an instance that may be recovered: sent again


class Caller:
    def __init__(self, here: Rank, unplaceable: Unplaceable, on_created: CreatedHook) -> None:
        self.here = here
        self.instances: dict[int, InstanceState] = {}
        self.calls: dict[int, PendingCall] = {}
        self._shipped: set[tuple[int, str]] = set()
        self._unplaceable = unplaceable  # refuses at the call site what no rank could ever hold
        self._on_created = on_created
        self.dropped: deque[InstanceState] = deque()  # handles gone: end these if unreferenced
        self._blobs: dict[str, bytes] = {}  # cls_key -> the pickled class (pickled at the first creation)
        self._declared = {name for cap in here.settings.get("capacity", ()) for name in cap.custom}
        self._last_create: dict[int, Create] = {}  # yr.Group members, to create again on resume

    def handlers(self) -> dict[type, Callable[..., None]]:
        return {Placed: self.on_placed, CreateFailed: self.on_create_failed, Result: self.on_result,
                InstanceEnded: self.on_instance_ended, Ref: self.on_ref, Moved: self.on_moved, Gone: self.on_gone}

    # -- creation --------------------------------------------------------------------------
    def create(
        self,
        cls: type,
        cls_key: str,
        methods: dict[str, int],
        args: tuple,
        kwargs: dict,
        opts: InvokeOptions,
        owner: int | None,
        oneshot: bool = False,
        label: str | None = None,
        defer: bool = False,
    ) -> InstanceState:
        """Ask the scheduler for a rank; the constructor follows when it answers. `defer`: not
        yet, `submit_create` asks (the members of a yr.Group are created together)."""
        here = self.here
        if opts.custom_resources:
            unknown = sorted(k for k, v in opts.custom_resources.items() if v and k not in self._declared)
            if unknown:
                raise ResourceError(
                    f"cannot create {label or cls.__qualname__}: invalid resource parameter: custom resource "
                    f"{unknown[0]!r} is declared by no rank (declared: {sorted(self._declared) or 'none'}; "
                    "Config(custom_resources=...) or YRMPI_RESOURCES declares them)", errors.ERR_RESOURCE_CONFIG_ERROR)
        problem = self._unplaceable(opts.cpu, opts.memory, opts.custom_resources)
        if problem:
            raise ResourceError(f"cannot create {label or cls.__qualname__}: {problem}")
        if cls_key not in self._blobs:
            self._blobs[cls_key] = _pickle_class(cls)
        iid = here.new_id()
        try:
            init_blob = dumps((args, kwargs))
        except Exception as exc:
            raise YRTypeError(f"arguments of {cls.__qualname__}() cannot be pickled: {exc}") from exc
        label = label or cls.__qualname__
        state = InstanceState(iid, label, methods, owned_here=True, oneshot=oneshot, detached=opts.detached,
                              owner_rank=here.rank, recover=opts.recover_retry_times)
        state.init = (cls, cls_key, init_blob, opts, owner)
        env = here.settings.get("custom_envs")
        inherited = getattr(here.current_instance(), "env", None)  # created inside an instance: its env too
        if env or inherited or opts.env_vars:
            state.env = {**(env or {}), **(inherited or {}), **opts.env_vars}
        state.pending.append(CONSTRUCT)
        self.instances[iid] = state
        spec = CreateSpec(
            cls=label, cpu=opts.cpu, memory=opts.memory, custom=dict(opts.custom_resources), name=opts.name,
            namespace=opts.namespace or "", get_if_exists=opts.get_if_exists, detached=opts.detached,
            policy=opts.custom_extensions.get("placement") or here.settings["placement"],
            timeout_ms=opts.schedule_timeout_ms, oneshot=oneshot, recover=opts.recover_retry_times, methods=methods,
            affinity=affinity_wire(opts.schedule_affinities) if opts.schedule_affinities else (),
            labels=tuple(str(label) for label in opts.labels),
            rg=_rg_of(opts.resource_group_options),
        )
        state.create = Create(iid, here.rank, owner, spec)
        if defer:
            self._last_create[iid] = state.create
        else:
            self.submit_create(state)
        return state

    def submit_create(self, state: InstanceState, policy: str | None = None) -> None:
        """Ask the scheduler to place a created instance (at once, or when its yr.Group is invoked,
        with the group's placement `policy` over the instance's own)."""
        msg, state.create = state.create, None
        if msg is None:
            return
        if msg.iid != state.iid:  # a new incarnation (a resumed group member)
            msg = msg._replace(iid=state.iid)
        if policy is not None:
            msg = msg._replace(spec=msg.spec._replace(policy=policy))
        self.here.send(0, msg)
        self._on_created(msg.owner, state.cls_name, state.iid)  # its siblings' group must grow before our next call

    def recreate(self, state: InstanceState, policy: str | None = None) -> None:
        """A new incarnation of an ended instance this rank created, under a new id, for the same
        handles (yr.Group.resume): its constructor runs again; calls queue until it is placed."""
        spec_msg = state.init and self._last_create.get(state.iid)
        if spec_msg is None:
            raise YRRuntimeError(f"{state.cls_name} instance {state.iid:x} was not created here: it cannot be resumed")
        self.instances.pop(state.iid, None)
        self._last_create.pop(state.iid, None)
        state.iid = self.here.new_id()
        self._last_create[state.iid] = spec_msg
        self.instances[state.iid] = state
        with state.lock:
            state.ended, state.released, state.rank = None, False, None
            state.pending = [CONSTRUCT]
        state.create = spec_msg
        self.submit_create(state, policy)

    def on_placed(self, iid: int, rank: int, actual_iid: int) -> None:
        """The scheduler chose `rank`; send the constructor, then calls queued meanwhile."""
        state = self.instances.get(iid)
        if state is None:
            return
        if actual_iid != iid:  # get_if_exists found a live one
            state.pending = [self._readdress(m, actual_iid) for m in state.pending if m is not CONSTRUCT]
            self.instances.pop(iid, None)
            state.iid = actual_iid
            state.owned_here = False
            existing = self.instances.get(actual_iid)
            if existing is not None:  # this rank knows it already (created it): one state for both handles
                self._forward(state, existing)
                return
            self.instances[actual_iid] = state
        with state.lock:
            state.rank = rank
            pending, state.pending = state.pending, []
            for item in pending:
                if item is CONSTRUCT:
                    self._send_construct(state, rank, *state.init)
                else:
                    self.here.send_encoded(rank, item)
            if pending and rank == self.here.rank:
                self.here.kick()

    def _forward(self, state: InstanceState, existing: InstanceState) -> None:
        """A second handle's state for an instance this rank already tracks: from now on its
        calls, and the events about the instance (its rank died, it moved, it ended), go
        through the state that was here first, so both handles see the same instance."""
        state.forward = existing
        for call in self.calls.values():
            if call.state is state:
                call.state = existing
        with existing.lock:
            if existing.rank is None:
                existing.pending += state.pending
                state.pending = []
                return
        pending, state.pending = state.pending, []
        for item in pending:
            self.here.send_encoded(existing.rank, item)

    def _readdress(self, encoded: tuple, iid: int) -> tuple:
        """A queued message (a Call or a Terminate) re-encoded for another instance id."""
        payload, buffers = encoded
        code, *fields = loads(payload, [b.raw() for b in buffers])
        msg = Call(*fields) if code == CALL else Terminate(*fields)
        return self.here.encode(msg._replace(iid=iid))

    def _send_construct(
        self, state: InstanceState, rank: int, cls: type, cls_key: str, init_blob: bytes,
        opts: InvokeOptions, owner: int | None,
    ) -> None:
        blob = None
        if (rank, cls_key) not in self._shipped:
            blob = self._blobs.get(cls_key) or cloudpickle.dumps(cls)
            self._shipped.add((rank, cls_key))
        options = {"concurrency": opts.concurrency, "recover": opts.recover_retry_times,
                   "oneshot": state.oneshot, "label": state.cls_name}
        if state.env:
            options["env"] = state.env
        async_limit = int(opts.custom_extensions.get("async_limit", "0"))  # (validated: digits)
        if async_limit:
            options["async_limit"] = async_limit
        self.here.send(rank, Construct(state.iid, owner, self.here.rank, cls_key, blob, init_blob, options))

    def on_create_failed(self, iid: int, code: int, message: str, kind: str) -> None:
        state = self.instances.get(iid)
        if state is None:
            return
        if kind == "deadlock":
            cls = DeadlockError
        else:
            cls = ResourceError if code == errors.ERR_RESOURCE_NOT_ENOUGH else YRRuntimeError
        self.end_instance(state, cls(message, code))

    # -- process failures ------------------------------------------------------------------
    def on_ranks_failed(self, ranks: list[int]) -> None:
        """Calls in flight to instances on dead ranks will never be answered: fail them now.
        Those instances wait for the scheduler's word: recovered ("moved") or "gone"."""
        dead = set(ranks)
        for state in list(self.instances.values()):
            if state.rank not in dead:
                continue
            if state.recover > 0:  # it may restart elsewhere ("moved"): its calls go again then ("gone": fail)
                with state.lock:
                    state.rank = None
                    state.pending.extend(call.encoded for call in self.calls.values()
                                         if call.state is state and call.encoded is not None)
                continue
            error = rank_died(
                f"{state.cls_name} instance {state.iid:x} died with rank {state.rank} (process failure); "
                "calls in flight are lost (if it has recover_retry_times left it restarts elsewhere: call again)",
                stateless=state.oneshot)
            with state.lock:
                state.rank = None
            self._fail_calls(state, error)

    def on_moved(self, iid: int, rank: int) -> None:
        """A recovered instance lives on `rank` now; its creator runs the constructor again."""
        state = self.instances.get(iid)
        if state is None:
            return
        if state.owned_here and state.init is not None:
            with state.lock:
                state.pending.insert(0, CONSTRUCT)
        self.on_placed(iid, rank, iid)

    def on_gone(self, iid: int, code: int, reason: str) -> None:
        """The scheduler's word that an instance died with its rank and will not restart (it can
        come before this rank sees the death itself)."""
        state = self.instances.get(iid)
        if state is not None:
            self.end_instance(state, rank_died(reason, code, stateless=state.oneshot))

    def end_instance(self, state: InstanceState, error: BaseException) -> None:
        """Fail everything still waiting on this instance here."""
        with state.lock:
            first = state.ended is None
            if first:
                state.ended = error
            state.pending = []
        self._fail_calls(state, state.ended)
        if first and state.on_end:
            self._ended_hooks(state)

    @staticmethod
    def _ended_hooks(state: InstanceState) -> None:
        for hook in list(state.on_end or ()):
            try:
                hook(state)
            except Exception:  # a hook never stops the poller
                pass

    def _fail_calls(self, state: InstanceState, error: BaseException) -> None:
        for call_id, call in list(self.calls.items()):
            if call.state is state:
                self.calls.pop(call_id, None)
                self._fail_or_retry(call, error)

    @staticmethod
    def _fail_or_retry(call: PendingCall, error: BaseException) -> None:
        """A stateless call with retries left runs again on a new one-shot instance, if its
        retry policy takes this error (a cancelled call never runs again)."""
        if (call.resubmit is not None and call.retries_left > 0 and not isinstance(error, CancelError)
                and (call.retry_if is None or call.retry_if(error))):
            call.resubmit(call)  # sends from the polling thread: small and non-blocking
            return
        for slot in call.slots:
            slot.set_error(error)

    # -- calls -----------------------------------------------------------------------------
    def call(
        self, state: InstanceState, method: str, args: tuple, kwargs: dict, nret: int,
        retries: int = 0, resubmit: Any = None, pending: PendingCall | None = None, retry_if: RetryIf | None = None,
    ) -> list[ObjectRef]:
        """Send a call (or queue it until the instance is placed); refs to its results."""
        here = self.here
        if state.forward is not None:
            state = state.forward
        if state.ended is not None:  # why it ended: terminated, its constructor raised, no room, ...
            raise state.ended
        if pending is None:
            call_id = here.new_id()
            slots = [Slot()]
            refs = [new_ref(call_id, here.rank, slots[0])]
            for _ in range(1, nret):
                slots.append(Slot())
                refs.append(new_ref(here.new_id(), here.rank, slots[-1]))
            pending = PendingCall(call_id, refs, slots, state, nret, resubmit, retries, retry_if)
        else:  # a retry: same call id and refs, a new instance
            pending.state = state
            pending.retries_left -= 1
        call_id, refs = pending.call_id, pending.refs
        try:
            # a Call, built as it travels (core/messages.py: the hot path)
            encoded = here.encode((CALL, call_id, here.rank, state.iid, method, args, kwargs, nret))
        except Exception as exc:
            raise YRTypeError(
                f"arguments of {state.cls_name}.{method} cannot be pickled: {exc}"
            ) from exc
        self.calls[call_id] = pending
        if state.recover:
            pending.encoded = encoded
        with state.lock:
            if state.rank is None:
                state.pending.append(encoded)
                return refs
        here.send_encoded(state.rank, encoded)
        if state.rank == here.rank:
            here.kick()
        return refs

    def on_result(self, call_id: int, ok: bool, payload: Any) -> None:
        call = self.calls.pop(call_id, None)
        if call is None:
            return
        if not ok:
            self._fail_or_retry(call, error_from_info(payload))
            return
        if call.nret <= 1:
            call.slots[0].set_result(payload)
            return
        if not isinstance(payload, (tuple, list)):  # as in the SDK: not a sequence is a TypeError,
            err: BaseException = YRTypeError(    # the wrong count a ValueError
                f"{call.state.cls_name} returned a {type(payload).__name__}, but return_nums={call.nret}: "
                f"return a tuple or list of {call.nret} values")
        elif len(payload) != call.nret:
            err = YRValueError(f"{call.state.cls_name} returned {len(payload)} values but return_nums={call.nret}")
        else:
            err = None
        if err is not None:
            for slot in call.slots:
                slot.set_error(err)
            return
        for slot, value in zip(call.slots, payload):
            slot.set_result(value)

    def on_instance_ended(self, iid: int, code: int, reason: str) -> None:
        """An instance this rank created ended: later invokes fail at once. Calls already sent
        get their answer from the host, which answers every call it received."""
        state = self.instances.get(iid)
        if state is None:
            return
        error = InstanceExitedError(reason, code)
        if state.ended is None:
            state.ended = error
            if state.on_end:
                self._ended_hooks(state)
        if state.rank is None:  # never placed: no host will answer the calls queued here
            with state.lock:
                state.pending = []
            self._fail_calls(state, state.ended)
        if state.handles <= 0:  # nothing here can refer to it any more: forget it
            self.instances.pop(iid, None)

    # -- reference counting of handles ------------------------------------------------------
    def on_handle_pickled(self, state: InstanceState) -> None:
        """A handle leaves this rank: one more reference the owner must wait for."""
        if state.owned_here:
            state.remote_refs += 1
        else:
            self.here.send(state.owner_rank, Ref(state.iid, 1))

    def on_ref(self, iid: int, delta: int) -> None:
        state = self.instances.get(iid)
        if state is None or not state.owned_here:
            return
        state.remote_refs += delta
        if state.remote_refs <= 0 and state.handles <= 0:
            self.dropped.append(state)

    def end_dropped(self) -> None:
        """End instances no handle refers to any more (after the calls already sent to them).

        Ranks that received handles give their references back to the owner; the owner ends
        the instance with a terminate that travels on the same path as the calls, so it
        queues behind them."""
        while self.dropped:
            state = self.dropped.popleft()
            if state.handles > 0:
                continue
            if not state.owned_here:
                if state.received and state.owner_rank >= 0:
                    self.here.send(state.owner_rank, Ref(state.iid, -state.received))
                    state.received = 0
                continue
            if state.remote_refs > 0 or state.detached:
                continue
            with state.lock:
                if state.ended is not None or state.released:
                    continue
                state.released = True  # no handle is left to call it: calls in flight still finish
                encoded = self.here.encode(Terminate(state.iid, "its last handle was dropped", True))
                if state.rank is None:
                    state.pending.append(encoded)
                    continue
            self.here.send_encoded(state.rank, encoded)

    def known_instance(
        self, iid: int, cls_name: str, methods: dict[str, int], rank: int | None, owner_rank: int = -1,
        recover: int = 0,
    ) -> InstanceState:
        """The state for a handle that arrived from another rank (or a lookup)."""
        state = self.instances.get(iid)
        if state is None:
            state = InstanceState(iid, cls_name, methods, rank=rank, owner_rank=owner_rank, recover=recover)
            self.instances[iid] = state
            if rank is None:
                self.here.send(0, Locate(iid, self.here.rank))
        return state

    def terminate(self, state: InstanceState, reason: str, graceful: bool, sync: bool = False) -> None:
        state = state.forward or state
        if state.ended is None:
            self.end_instance(state, InstanceExitedError("this instance is terminated"))
        msg = Kill(state.iid, reason, graceful, self.here.rank, sync)
        if sync:
            self.here.request(msg, key=state.iid, timeout=None)
        else:
            self.here.send(0, msg)

    def restart(self, state: InstanceState, reason: str) -> None:
        """End an instance so that it comes back, if it has restarts left (`ray.kill(actor,
        no_restart=False)`): its calls in flight fail; once the scheduler has placed it again
        (Moved), calls go to the new incarnation. With no restart left it simply ends."""
        state = state.forward or state
        with state.lock:
            state.rank = None  # later calls wait here for its new place, as for one not placed yet
        self.here.send(0, Kill(state.iid, reason, False, self.here.rank, False, True))

    def cancel(self, ref: ObjectRef) -> None:
        call = self.calls.get(ref.id)
        if call is None:
            return
        if call.state.oneshot:
            self.terminate(call.state, "cancelled", graceful=False)
            self.calls.pop(ref.id, None)
            for slot in call.slots:
                slot.set_error(CancelError("the call was cancelled before it started"))


def _rg_of(options: Any) -> tuple:
    """(resource group name, bundle index) of InvokeOptions.resource_group_options, or ()."""
    name = getattr(options, "resource_group_name", "") if options is not None else ""
    if not name:
        return ()
    index = getattr(options, "bundle_index", -1)
    if not isinstance(index, int) or index < -1:
        raise YRValueError(f"ResourceGroupOptions.bundle_index must be -1 or a bundle's index, got {index!r}")
    return (name, index)


def _pickle_class(cls: type) -> bytes:
    """The class as it travels to host ranks; one that cannot be pickled fails here, at the
    creation, naming the class and the attribute that cannot be pickled."""
    try:
        return cloudpickle.dumps(cls)
    except Exception as exc:
        culprit = ""
        for klass in cls.__mro__:
            if klass is object:
                continue
            for name, value in vars(klass).items():
                if name.startswith("__") and name.endswith("__"):
                    continue
                try:
                    cloudpickle.dumps(value)
                except Exception as inner:
                    culprit = f": its attribute {klass.__qualname__}.{name} ({type(value).__name__}) cannot be " \
                              f"pickled ({inner})"
                    break
            if culprit:
                break
        raise YRTypeError(f"class {cls.__qualname__} cannot be sent to the host ranks{culprit or f': {exc}'}; "
                          "create such attributes in __init__ instead") from exc
