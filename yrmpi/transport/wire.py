"""The runtime's MPI transport: `send` on one side, `receive` on the other.

Every control message is one pickled tuple on the control communicator (a duplicate of
COMM_WORLD, so user MPI code never collides with it); its tag says whether a header naming
out-of-band buffers comes first. Large buffers (numpy arrays) leave the
pickle out of band (protocol 5) and travel as raw MPI messages on a second duplicate, each
transfer under its own tag so concurrent senders never pair the wrong buffer with a header.
"""

from __future__ import annotations

import itertools
import pickle
import struct
import threading
from collections import deque
from typing import Any

import numpy as np

from ..core.messages import RanksFailed, wire_form
from .pickling import Buffers, dumps, loads

TAG_PLAIN = 0  # control message: the pickle alone
TAG_WITH_BUFFERS = 1  # control message: a header naming out-of-band buffers, then the pickle
_HEADER = struct.Struct("<II")  # data tag, number of buffers; then one <Q size per buffer
EAGER_BYTES = 4096  # Open MPI's shared-memory eager limit: a larger send waits for its receiver


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
        self._status = MPI.Status()  # only the thread holding the polling role receives
        self._any_source, self._any_tag = MPI.ANY_SOURCE, MPI.ANY_TAG

    @staticmethod
    def encode(msg: tuple) -> tuple[bytes, list]:
        """Pickle a message now (errors surface at the caller); send it later with send_encoded."""
        buffers = Buffers()
        return dumps(msg if type(msg) is tuple else wire_form(msg), buffers), buffers  # (a plain tuple is one)

    @staticmethod
    def waits_for_receiver(payload: bytes, buffers: list) -> bool:
        """Whether sending this blocks until the peer posts its receive (rendezvous)."""
        return bool(buffers) or len(payload) > EAGER_BYTES

    def send(self, dest: int, msg: tuple) -> None:
        """Send one message; blocks only while large buffers are handed to MPI."""
        buffers = Buffers()
        self.send_encoded(dest, (dumps(msg if type(msg) is tuple else wire_form(msg), buffers), buffers))

    def send_encoded(self, dest: int, encoded: tuple[bytes, list]) -> None:
        """Send what `encode` made."""
        payload, buffers = encoded
        if dest == self.rank:  # a copy, as a remote rank would get, without an MPI self-send
            self._local.append(loads(payload, [bytearray(b.raw()) for b in buffers]))
            return
        if dest in self.failed:
            return  # the rank is dead; whoever waited on it was told when it died
        try:
            if not buffers:
                self.ctrl.Send(payload, dest, TAG_PLAIN)
                return
            with self._tag_lock:
                tag = next(self._tags)
            sizes = [b.raw().nbytes for b in buffers]
            header = _HEADER.pack(tag, len(sizes)) + struct.pack(f"<{len(sizes)}Q", *sizes)
            self.ctrl.Send(header + payload, dest, TAG_WITH_BUFFERS)
            for buf in buffers:
                self.data.Send([buf.raw(), self._mpi.BYTE], dest, tag)
        except self._mpi.Exception as exc:  # a rank that just died: receive() reports it to everyone
            if not self._is_failure(exc):
                raise

    def receive(self) -> tuple | None:
        """One pending message (local first), or None. Never blocks waiting for one.

        Under ULFM, the death of a rank surfaces here as a RanksFailed message, once per rank."""
        if self._local:
            return self._local.popleft()
        status = self._status
        try:
            message = self.ctrl.improbe(self._any_source, self._any_tag, status)
        except self._mpi.Exception as exc:
            failed = self._newly_failed(exc)
            return wire_form(RanksFailed(failed)) if failed else None
        if message is None:
            return None
        raw = bytearray(status.Get_count(self._mpi.BYTE))
        message.Recv(raw)
        if status.Get_tag() == TAG_PLAIN:
            return pickle.loads(raw)
        tag, count = _HEADER.unpack_from(raw)
        sizes = struct.unpack_from(f"<{count}Q", raw, _HEADER.size)
        source = status.Get_source()
        buffers = []
        for size in sizes:
            buf = np.empty(size, dtype=np.uint8)
            self.data.Recv([buf, self._mpi.BYTE], source, tag)
            buffers.append(buf)
        return loads(memoryview(raw)[_HEADER.size + 8 * count:], buffers)

    def _is_failure(self, exc: Exception) -> bool:
        """The error ULFM raises when a peer rank has died."""
        MPI = self._mpi
        return exc.Get_error_class() in (MPI.ERR_PROC_FAILED, getattr(MPI, "ERR_PROC_FAILED_PENDING", -1))

    def _newly_failed(self, exc: Exception) -> list[int]:
        """Acknowledge process failures (ULFM) and return the ranks not reported before."""
        if not self._is_failure(exc):
            raise exc
        MPI = self._mpi
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
