"""Requests to another rank and their replies, matched by key: one table per rank.

The asker registers a key (`expect`), sends its request carrying the key, and waits on the
returned slot however it likes; the `Reply` message resolves it (`answer`). A reply that
arrives after its asker gave up finds no slot and is dropped.
"""

from __future__ import annotations

from typing import Any

from .refs import Slot


class Replies:
    def __init__(self) -> None:
        self._slots: dict[int, Slot] = {}

    def expect(self, key: int) -> Slot:
        slot = self._slots[key] = Slot()
        return slot

    def forget(self, key: int) -> None:
        self._slots.pop(key, None)

    def answer(self, key: int, payload: Any) -> None:
        slot = self._slots.get(key)
        if slot is not None:
            slot.set_result(payload)
