"""The runtime's MPI transport: `send` on one side, `receive` on the other.

Every control message is one pickled tuple on the control communicator (a duplicate of
COMM_WORLD, so user MPI code never collides with it). Large buffers (numpy arrays) leave the
pickle out of band (protocol 5) and travel as raw MPI messages on a second duplicate, each
transfer under its own tag so concurrent senders never pair the wrong buffer with a header.
"""

from __future__ import annotations

import itertools
import pickle
import struct
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import cloudpickle
import numpy as np

OOB_MIN_BYTES = 64 * 1024  # smaller buffers stay inside the pickle: one message is cheaper
_PLAIN = b"\x00"
_WITH_BUFFERS = b"\x01"


def _needs_cloudpickle(data: bytes) -> bool:
    """A plain pickle that names __main__ (or a module registered to travel by value) would
    not load on another rank, which never ran the driver script."""
    if b"__main__" in data:
        return True
    by_value = cloudpickle.cloudpickle._PICKLE_BY_VALUE_MODULES
    return bool(by_value) and any(name.encode() in data for name in by_value)


_session = threading.local()


def after_pickle(action: Callable[[], None]) -> None:
    """Run `action` once the message being pickled is final (a first attempt may be redone
    with cloudpickle, which calls the reducers again); at once outside `dumps`."""
    pending = getattr(_session, "actions", None)
    if pending is None:
        action()
    else:
        pending.append(action)


def dumps(obj: Any, buffers: list | None = None) -> bytes:
    """Pickle with protocol 5; see `_dumps`. Side effects of reducers run once, on success."""
    outer = getattr(_session, "actions", None)
    _session.actions = []
    try:
        data = _dumps(obj, buffers)
        actions = _session.actions
    finally:
        _session.actions = outer
    for action in actions:
        after_pickle(action)
    return data


def _dumps(obj: Any, buffers: list | None = None) -> bytes:
    """Pickle with protocol 5: the standard pickler when its output loads anywhere (fast),
    else cloudpickle, which sends classes and functions of the driver script by value.
    With `buffers`, large buffers (numpy arrays) are left out of band and appended there."""
    callback = None
    if buffers is not None:
        def callback(pb: pickle.PickleBuffer) -> bool:
            if pb.raw().nbytes >= OOB_MIN_BYTES:
                buffers.append(pb)
                return False
            return True
    try:
        data = pickle.dumps(obj, protocol=5, buffer_callback=callback)
        if not _needs_cloudpickle(data):
            return data
    except Exception:
        pass
    if buffers:
        buffers.clear()
    _session.actions.clear()  # the reducers run again below
    return cloudpickle.dumps(obj, protocol=5, buffer_callback=callback)


def loads(data: Any, buffers: list | None = None) -> Any:
    return pickle.loads(data, buffers=buffers)


class Wire:
    """Point-to-point messages between ranks over private duplicates of a communicator."""

    def __init__(self, comm: Any) -> None:
        from mpi4py import MPI

        self._mpi = MPI
        self.ctrl = comm.Dup()
        self.data = comm.Dup()
        self.rank: int = comm.Get_rank()
        self.size: int = comm.Get_size()
        tag_ub = self.data.Get_attr(MPI.TAG_UB) or 32767
        self._tags = itertools.cycle(range(1, min(tag_ub, 1 << 20)))
        self._tag_lock = threading.Lock()
        self._local: deque = deque()  # messages to this rank: no MPI self-send, no deadlock
        self.failed: set[int] = set()  # ranks known dead (ULFM)

    @staticmethod
    def encode(msg: tuple) -> tuple[bytes, list]:
        """Pickle a message now (errors surface at the caller); send it later with send_encoded."""
        buffers: list = []
        return dumps(msg, buffers), buffers

    def send(self, dest: int, msg: tuple) -> None:
        """Send one message; blocks only while large buffers are handed to MPI."""
        self.send_encoded(dest, *self.encode(msg))

    def send_encoded(self, dest: int, payload: bytes, buffers: list) -> None:
        if dest == self.rank:  # a copy, as a remote rank would get, without an MPI self-send
            self._local.append(loads(payload, [bytearray(b.raw()) for b in buffers]))
            return
        if dest in self.failed:
            return  # the rank is dead; whoever waited on it was told when it died
        MPI = self._mpi
        try:
            if not buffers:
                self.ctrl.Send([_PLAIN + payload, MPI.BYTE], dest, 0)
                return
            with self._tag_lock:
                tag = next(self._tags)
            sizes = [b.raw().nbytes for b in buffers]
            header = _WITH_BUFFERS + struct.pack(f"<II{len(sizes)}Q", tag, len(sizes), *sizes)
            self.ctrl.Send([header + payload, MPI.BYTE], dest, 0)
            for buf in buffers:
                self.data.Send([buf.raw(), MPI.BYTE], dest, tag)
        except MPI.Exception as exc:  # a rank that just died: receive() reports it to everyone
            if exc.Get_error_class() not in (MPI.ERR_PROC_FAILED, getattr(MPI, "ERR_PROC_FAILED_PENDING", -1)):
                raise

    def receive(self) -> tuple | None:
        """One pending message (local first), or None. Never blocks waiting for one.

        Under ULFM, the death of a rank surfaces here as ("ranks_failed", [ranks]), once."""
        if self._local:
            return self._local.popleft()
        MPI = self._mpi
        status = MPI.Status()
        try:
            message = self.ctrl.improbe(MPI.ANY_SOURCE, MPI.ANY_TAG, status)
        except MPI.Exception as exc:
            failed = self._newly_failed(exc)
            return ("ranks_failed", failed) if failed else None
        if message is None:
            return None
        raw = bytearray(status.Get_count(MPI.BYTE))
        message.Recv([raw, MPI.BYTE])
        if raw[:1] == _PLAIN:
            return loads(memoryview(raw)[1:])
        tag, count = struct.unpack_from("<II", raw, 1)
        sizes = struct.unpack_from(f"<{count}Q", raw, 9)
        source = status.Get_source()
        buffers = []
        for size in sizes:
            buf = np.empty(size, dtype=np.uint8)
            self.data.Recv([buf, MPI.BYTE], source, tag)
            buffers.append(buf)
        return loads(memoryview(raw)[9 + 8 * count:], buffers)

    def _newly_failed(self, exc: Exception) -> list[int]:
        """Acknowledge process failures (ULFM) and return the ranks not reported before."""
        MPI = self._mpi
        if exc.Get_error_class() not in (MPI.ERR_PROC_FAILED, getattr(MPI, "ERR_PROC_FAILED_PENDING", -1)):
            raise exc
        self.ctrl.Ack_failed()
        group = self.ctrl.Get_failed()
        world = self.ctrl.Get_group()
        ranks = MPI.Group.Translate_ranks(group, list(range(group.Get_size())), world)
        group.Free()
        world.Free()
        new = sorted(set(ranks) - self.failed)
        self.failed.update(new)
        return new

    def free(self) -> None:
        for comm in (self.ctrl, self.data):
            try:
                comm.Free()
            except Exception:  # a revoked or failed communicator cannot always be freed
                pass
