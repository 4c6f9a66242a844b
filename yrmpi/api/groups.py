"""yr's groups of instances: `yr.Group` (members created together, sharing their fate) and
resource groups (`yr.create_resource_group`: capacity reserved at once, instances placed in it
with `InvokeOptions.resource_group_options`).

A natural fit for an experiment: reserve its supervisor's and its workers' capacity in one
resource group, or create them as one `yr.Group`, so none of them starts before all fit and
none outlives the others.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from .. import runtime as _rt
from ..core.errors import YRRuntimeError, YRTimeoutError, YRTypeError, YRValueError
from ..core.messages import RgCreate, RgRemove
from ..core.options import GroupOptions, ResourceGroupOptions
from ..core.refs import get, wait_slot
from ..roles.caller import InstanceState

__all__ = ["Group", "GroupOptions", "ResourceGroup", "ResourceGroupOptions", "create_resource_group",
           "register_member", "remove_resource_group"]

DEFAULT_BUNDLE_CPU = 300  # millicores, as in the SDK when a bundle names no CPU
DEFAULT_BUNDLE_MEMORY = 128  # MB


# -- resource groups ------------------------------------------------------------------------------
class ResourceGroup:
    """What `create_resource_group` returns; `wait()` blocks until the reservation is made."""

    def __init__(self, name: str, request_id: Any, bundles: list[dict]) -> None:
        self.name = name
        self.request_id = request_id
        self.bundles = bundles
        self._slot: Any = None
        self._result: Any = None

    @property
    def bundle_specs(self) -> list[dict]:
        return self.bundles

    @property
    def bundle_count(self) -> int:
        return len(self.bundles)

    @property
    def resource_group_name(self) -> str:
        return self.name

    def wait(self, timeout_seconds: int | None = None) -> None:
        """Until the scheduler has reserved every bundle: at once if they fit, else when enough
        capacity is given back (-1/None: for ever). RuntimeError if they can never fit (not even
        in an empty job) or the group was removed; YRTimeoutError (a RuntimeError) at the
        timeout, the request still standing: wait again, or withdraw it (remove_resource_group)."""
        timeout = -1 if timeout_seconds is None else timeout_seconds
        if timeout < -1:
            raise YRValueError("Parameter 'timeout_seconds' should be greater than or equal to -1 (no timeout)")
        rt = _rt.current()
        if self._slot is not None:
            deadline = None if timeout == -1 else time.monotonic() + timeout
            if not wait_slot(self._slot, deadline):
                raise YRTimeoutError(
                    f"resource group {self.name!r} was not created in {timeout} s: its bundles do not fit in "
                    "the free capacity yet; the request stands (wait() again, or remove_resource_group)")
            self._result = self._slot.result()
            rt.replies.forget(self.request_id)
            self._slot = None
        if self._result is not None:
            raise YRRuntimeError(self._result)

    def __repr__(self) -> str:
        return f"ResourceGroup({self.name!r}, {len(self.bundles)} bundles)"


def _bundle(spec: Any, index: int) -> tuple[int, int, dict]:
    if not isinstance(spec, dict):
        raise YRTypeError(f"bundle {index} must be a dict of resource name -> amount, got {spec!r}")
    custom = {}
    for key, amount in spec.items():
        if not isinstance(key, str) or not key:
            raise YRValueError(f"bundle {index}: a resource name must be a non-empty str, got {key!r}")
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount < 0:
            raise YRValueError(f"bundle {index}: {key} must be a number >= 0, got {amount!r}")
        if key not in ("CPU", "Memory") and amount > 0:
            custom[key] = amount
    cpu = int(spec.get("CPU") or DEFAULT_BUNDLE_CPU)
    memory = int(spec.get("Memory") or DEFAULT_BUNDLE_MEMORY)
    return cpu, memory, custom


def create_resource_group(bundles: list[dict], name: str | None = None, strategy: str | None = "PACK") -> ResourceGroup:
    """Reserve `bundles` ({"CPU": millicores, "Memory": MB, custom: amount}) at once: PACK (as few
    nodes as possible), SPREAD, STRICT_PACK (one node), STRICT_SPREAD (one node each)."""
    if not isinstance(bundles, list):
        raise YRTypeError(f"invalid bundles type, actual: {type(bundles)}, expect: list.")
    if not bundles:
        raise YRValueError("invalid bundles number, actual: 0, expect: > 0.")
    if name is None:
        name = f"rgroup-{uuid.uuid4()}"
    if not isinstance(name, str):
        raise YRTypeError(f"invalid name type: {type(name)}, should be a str")
    if name in ("", "primary"):
        raise YRValueError(f"invalid resource group name {name!r}")
    wire = [_bundle(spec, i) for i, spec in enumerate(bundles)]
    rt = _rt.current()
    key = rt.new_id()
    group = ResourceGroup(name, key, bundles)
    group._slot = rt.replies.expect(key)
    rt.send(0, RgCreate(key, rt.rank, name, wire, strategy or ""))
    return group


def remove_resource_group(resource_group: str | ResourceGroup) -> None:
    """Free a resource group's reservation; the instances placed in it end."""
    name = resource_group.name if isinstance(resource_group, ResourceGroup) else resource_group
    if not isinstance(name, str):
        raise YRTypeError(f"remove_resource_group takes a name or a ResourceGroup, got {resource_group!r}")
    rt = _rt.current()
    key = rt.new_id()
    rt.request(RgRemove(key, rt.rank, name), key=key, timeout=60)


# -- yr.Group -------------------------------------------------------------------------------------
_GROUP_POLICIES = {"": None, "PACK": "pack", "SPREAD": "spread"}


def _group_policy(strategy: str) -> str | None:
    """GroupOptions.strategy as the members' placement policy (None: as each member says)."""
    key = (strategy or "").upper() if isinstance(strategy, str) else strategy
    if key in ("STRICT_PACK", "STRICT_SPREAD"):
        raise YRValueError(f"GroupOptions.strategy={strategy!r}: a yr.Group places its members by preference only; "
                           f"reserve them with yr.create_resource_group(bundles, strategy={key!r}) and "
                           "InvokeOptions.resource_group_options")
    if key not in _GROUP_POLICIES:
        raise YRValueError(f"GroupOptions.strategy={strategy!r} is unknown; valid: 'PACK', 'SPREAD' (or '')")
    return _GROUP_POLICIES[key]
_members: dict[str, list[InstanceState]] = {}  # group name -> members created with it, not invoked yet


def register_member(group_name: str, state: InstanceState) -> None:
    """An instance created with `InvokeOptions.group_name`: it starts at its Group's `invoke()`."""
    _members.setdefault(group_name, []).append(state)


class Group:
    """Instances created with `InvokeOptions(group_name=...)` start together at `invoke()`;
    with `same_lifecycle` (the default), when one ends the others are ended too."""

    def __init__(self, group_name: str = "", group_opts: GroupOptions | None = None) -> None:
        self.group_name = group_name
        self.group_opts = group_opts or GroupOptions()
        self._policy = _group_policy(self.group_opts.strategy)
        self._states: list[InstanceState] = []
        self._saved: list[dict | None] = []
        self._quiet = False  # ending members on purpose: no shared-fate cascade

    def invoke(self) -> None:
        rt = _rt.current()
        self._states = _members.pop(self.group_name, [])
        if not self._states:
            raise YRValueError(f"yr.Group({self.group_name!r}): no instance was created with this group_name")
        for state in self._states:
            if self.group_opts.same_lifecycle:
                state.on_end = (state.on_end or []) + [self._member_ended]
            rt.caller.submit_create(state, self._policy)

    def _member_ended(self, state: InstanceState) -> None:
        if self._quiet:
            return
        self._quiet = True
        caller = _rt.current().caller
        for other in self._states:
            if other is not state and other.ended is None:
                caller.terminate(other, f"a member of group {self.group_name!r} ended", graceful=False)

    def wait(self) -> None:
        """Until every member's constructor has run; if one failed, all end and its error is raised."""
        rt = _rt.current()
        timeout = self.group_opts.timeout
        pings = [rt.caller.call(state, "__sizeof__", (), {}, 1)[0] for state in self._states]
        try:
            get(pings, timeout=-1 if timeout is None or timeout < 0 else max(timeout, 0.001))
        except BaseException:
            self.terminate()
            raise

    def terminate(self) -> None:
        caller = _rt.current().caller
        self._quiet = True
        for state in self._states:
            if state.ended is None:
                caller.terminate(state, f"its group {self.group_name!r} was terminated", graceful=False)

    def suspend(self) -> None:
        """End every member, keeping its attributes; `resume()` creates them again with those."""
        rt = _rt.current()
        self._saved = get([rt.caller.call(state, "__getstate__", (), {}, 1)[0] for state in self._states],
                          timeout=-1)
        self._quiet = True
        for state in self._states:
            rt.caller.terminate(state, f"its group {self.group_name!r} was suspended", graceful=False, sync=True)

    def resume(self) -> None:
        """Create the suspended members again (their constructors run), then restore their attributes."""
        rt = _rt.current()
        if not self._saved:
            raise YRRuntimeError(f"yr.Group({self.group_name!r}) was not suspended")
        for state, saved in zip(self._states, self._saved):
            rt.caller.recreate(state, self._policy)
            for name, value in (saved or {}).items():
                rt.caller.call(state, "__setattr__", (name, value), {}, 1)
        self._saved = []
        self._quiet = False
