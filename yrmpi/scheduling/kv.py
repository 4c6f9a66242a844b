"""The job's key-value store (`yr.kv_write`, `yr.kv_read`, ...), held by rank 0.

One dict in rank 0's memory, job-wide: the driver and every instance, on any rank, read and
write the same keys. It lives as long as the job: values survive the instances and the host
ranks that wrote them (a rank that dies under ULFM), not the driver or `yr.finalize`. A read
of a key that does not exist yet waits for its write (up to the reader's timeout); keys with a
time to live expire lazily, when next touched or listed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..core.messages import KvDel, KvRead, KvWrite, Reply
from ..core.rank import Rank


class KvStore:
    def __init__(self, here: Rank) -> None:
        self.here = here
        self.values: dict[str, Any] = {}
        self.expires: dict[str, float] = {}  # key -> monotonic time it expires at
        self.readers: list[tuple[int, int, list, float | None, bool]] = []  # waiting for keys

    def handlers(self) -> dict[type, Callable[..., None]]:
        return {KvWrite: self.on_kv_write, KvRead: self.on_kv_read, KvDel: self.on_kv_del}

    def _live(self, key: str) -> bool:
        if key not in self.values:
            return False
        expiry = self.expires.get(key)
        if expiry is not None and expiry <= self.here.clock():
            del self.values[key]
            del self.expires[key]
            return False
        return True

    def _reply(self, requester: int, req_id: int, payload: Any) -> None:
        self.here.send_from_handler(requester, Reply(req_id, payload))  # a value may be large

    def on_kv_write(self, req_id: int, requester: int, keys: list, values: list, nx: bool, ttl: float) -> None:
        if nx:
            taken = [k for k in keys if self._live(k)]
            if taken:
                self._reply(requester, req_id, f"key {taken[0]!r} already exists (ExistenceOpt.NX)")
                return
        now = self.here.clock()
        for key, value in zip(keys, values):
            self.values[key] = value
            if ttl and ttl > 0:
                self.expires[key] = now + ttl
            else:
                self.expires.pop(key, None)
        self._reply(requester, req_id, None)
        if self.readers:
            self._serve_readers()

    def on_kv_read(self, req_id: int, requester: int, keys: list, timeout: float, partial: bool) -> None:
        deadline = None if timeout is None or timeout < 0 else self.here.clock() + timeout
        if all(self._live(k) for k in keys):
            self._reply(requester, req_id, [self.values[k] for k in keys])
            return
        self.readers.append((req_id, requester, keys, deadline, partial))
        self._expire_readers()

    def on_kv_del(self, req_id: int, requester: int, keys: list) -> None:
        for key in keys:
            self.values.pop(key, None)
            self.expires.pop(key, None)
        self._reply(requester, req_id, None)

    def _serve_readers(self) -> None:
        waiting = []
        for reader in self.readers:
            req_id, requester, keys, _deadline, _partial = reader
            if all(self._live(k) for k in keys):
                self._reply(requester, req_id, [self.values[k] for k in keys])
            else:
                waiting.append(reader)
        self.readers = waiting
        self._expire_readers()

    def _expire_readers(self) -> None:
        """Readers past their timeout get their answer (partial) or an error; called on each
        message and by `tick`."""
        now = self.here.clock()
        waiting = []
        for reader in self.readers:
            req_id, requester, keys, deadline, partial = reader
            if deadline is None or deadline > now:
                waiting.append(reader)
                continue
            if partial:
                self._reply(requester, req_id, [self.values[k] if self._live(k) else None for k in keys])
            else:
                missing = [k for k in keys if not self._live(k)]
                self._reply(requester, req_id, f"key {missing[0]!r} does not exist (waited for its write)")
        self.readers = waiting

    def tick(self, now: float) -> None:
        if self.readers:
            self._expire_readers()
