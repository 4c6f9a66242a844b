"""This rank's object store: the values of refs it owns that escaped to other ranks, and the
fetches of values owned elsewhere.

A ref that leaves its owner rank (pickled into a call, a result, a handle's state) pins its
value there until the job ends; the first `get` of it on another rank sends a Fetch, and
the owner answers with the Value once it is ready.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from ..core.errors import InstanceExitedError, YRRuntimeError, error_from_info, error_info
from ..core.messages import Fetch, Value
from ..core.rank import Rank
from ..core.refs import ObjectRef, Slot, slot_of


class Objects:
    def __init__(self, here: Rank) -> None:
        self.here = here
        self.pinned: dict[int, ObjectRef] = {}
        self.remote: weakref.WeakValueDictionary[int, ObjectRef] = weakref.WeakValueDictionary()
        self._fetching: dict[int, Slot] = {}

    def handlers(self) -> dict[type, Callable[..., None]]:
        return {Fetch: self.on_fetch, Value: self.on_value}

    def pin(self, ref: ObjectRef) -> None:
        """A ref that leaves this rank keeps its value here until finalize (others may fetch)."""
        if ref.owner == self.here.rank:
            self.pinned[ref.id] = ref

    def ref_from_wire(self, ref_id: int, owner: int) -> ObjectRef:
        if owner == self.here.rank and ref_id in self.pinned:
            return self.pinned[ref_id]
        ref = self.remote.get(ref_id)
        if ref is None:
            ref = ObjectRef(ref_id, owner, Slot())
            self.remote[ref_id] = ref
        return ref

    def ensure_fetch(self, ref: ObjectRef) -> None:
        if ref.owner == self.here.rank:  # (first: most refs are this rank's own, and this is on every get)
            return
        slot = slot_of(ref)
        if slot.done() or slot.fetching:
            return
        slot.fetching = True
        self._fetching[ref.id] = slot
        self.here.send(ref.owner, Fetch(ref.id, self.here.rank))

    def _refuse(self, requester: int, ref_id: int, err: BaseException) -> None:
        self.here.send(requester, Value(ref_id, False, error_info(err, f"rank {self.here.rank}")))

    def on_fetch(self, ref_id: int, requester: int) -> None:
        ref = self.pinned.get(ref_id)
        if ref is None:
            self._refuse(requester, ref_id,
                         YRRuntimeError(f"object {ref_id:x} is not held by rank {self.here.rank} (released?)"))
            return

        def reply(slot: Slot) -> None:
            if slot.error is not None:
                msg = Value(ref_id, False, error_info(slot.error, f"rank {self.here.rank}"))
            else:
                msg = Value(ref_id, True, slot.value)
            try:
                self.here.send_from_handler(requester, msg)
            except Exception as exc:  # a value that cannot be pickled: say so, do not leave them waiting
                self._refuse(requester, ref_id,
                             YRRuntimeError(f"object {ref_id:x} on rank {self.here.rank} cannot be sent: {exc!r}"))

        slot_of(ref).add_callback(reply)

    def on_value(self, ref_id: int, ok: bool, payload: Any) -> None:
        slot = self._fetching.pop(ref_id, None)
        if slot is None:
            return
        if ok:
            slot.set_result(payload)
        else:
            slot.set_error(error_from_info(payload))

    def on_ranks_failed(self, ranks: list[int]) -> None:
        """Values owned by dead ranks can never arrive."""
        for ref_id, slot in list(self._fetching.items()):
            owner = ref_id >> 40  # ids carry their rank (Rank.new_id)
            if owner in ranks:
                self._fetching.pop(ref_id, None)
                slot.set_error(InstanceExitedError(f"the value's owner, rank {owner}, died (process failure)"))

    def put(self, obj: Any) -> ObjectRef:
        slot = Slot()
        slot.set_result(obj)
        return ObjectRef(self.here.new_id(), self.here.rank, slot)
