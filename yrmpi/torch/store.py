"""A torch.distributed Store over MPI: the rendezvous of a group's process group without a port.

Group rank 0 holds the keys; a thread of its process answers the other members' requests,
which travel as pickled MPI messages on a private duplicate of the group's communicator.
Rank 0's own operations go straight to the table. A `get` or `wait` for keys that nobody has
set yet is parked at the holder and answered when they are set (or times out at the asker).

What torch needs of a Store (gloo and NCCL rendezvous, DDP, barriers): set, get, add,
compare_set, wait, check, delete_key, num_keys; the rest (multi_get, append, ...) torch builds
from these.
"""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from datetime import timedelta
from typing import Any

import torch.distributed as dist

__all__ = ["MPIStore"]

TAG_REQUEST, TAG_REPLY = 11, 12
POLL_MIN_S, POLL_MAX_S = 20e-6, 5e-3  # the holder's and the askers' waits: spin briefly, then back off
SPIN_POLLS = 200


class _Table:
    """The keys (held by group rank 0) and the requests parked on missing keys."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.cond = threading.Condition()
        self.parked: list[tuple[list[str], Any]] = []  # (keys, answer(value)) for remote gets/waits

    def apply(self, op: str, args: tuple) -> tuple[bool, Any]:
        """(done, result) of one operation; not done: a get/wait whose keys are missing. Under cond."""
        data = self.data
        if op == "set":
            data[args[0]] = args[1]
            self._changed()
            return True, None
        if op == "get":
            return (True, data[args[0]]) if args[0] in data else (False, None)
        if op == "wait":
            return (True, None) if all(k in data for k in args[0]) else (False, None)
        if op == "add":
            value = int(data.get(args[0], b"0")) + args[1]
            data[args[0]] = str(value).encode()
            self._changed()
            return True, value
        if op == "compare_set":
            key, expected, desired = args
            current = data.get(key)
            if (current is None and expected == b"") or current == expected:
                data[key] = desired
                self._changed()
                return True, desired
            return True, expected if current is None else current
        if op == "check":
            return True, all(k in data for k in args[0])
        if op == "delete_key":
            found = data.pop(args[0], None) is not None
            return True, found
        if op == "num_keys":
            return True, len(data)
        raise ValueError(f"unknown store operation {op!r}")

    def _changed(self) -> None:
        self.cond.notify_all()
        still = []
        for keys, answer in self.parked:
            if all(k in self.data for k in keys):
                answer(self.data[keys[0]] if len(keys) == 1 else None)
            else:
                still.append((keys, answer))
        self.parked = still


class MPIStore(dist.Store):
    """A Store for the members of one communicator (collective to create; `close` when done).

    `comm` is duplicated, so the store's messages never meet the caller's. Every member must
    create it in the same order relative to other collective calls on `comm`."""

    def __init__(self, comm: Any, timeout: timedelta = timedelta(seconds=300)) -> None:
        super().__init__()
        from mpi4py import MPI

        self._MPI = MPI
        self._comm = comm.Dup()
        self._rank = self._comm.Get_rank()
        #: the same random word on every member: names what is built on this store (a group name)
        self.token: str = self._comm.bcast(secrets.token_hex(6) if self._rank == 0 else None, root=0)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()  # one request at a time per member process
        self._closed = False
        self.set_timeout(timeout)
        self._table: _Table | None = None
        self._thread: threading.Thread | None = None
        if self._rank == 0:
            self._table = _Table()
            self._sends: list = []
            self._thread = threading.Thread(target=self._serve, name="yrmpi-torch-store", daemon=True)
            self._thread.start()

    # -- the torch Store interface --------------------------------------------------------------
    def set(self, key: str, value: Any) -> None:
        self._call("set", key, _bytes(value))

    def get(self, key: str) -> bytes:
        return self._call("get", key, wait_for=[key])

    def add(self, key: str, value: int) -> int:
        return self._call("add", key, int(value))

    def compare_set(self, key: str, expected_value: Any, desired_value: Any) -> bytes:
        return self._call("compare_set", key, _bytes(expected_value), _bytes(desired_value))

    def wait(self, keys: list[str], timeout: timedelta | None = None) -> None:
        self._call("wait", list(keys), wait_for=list(keys), timeout=timeout)

    def check(self, keys: list[str]) -> bool:
        return self._call("check", list(keys))

    def delete_key(self, key: str) -> bool:
        return self._call("delete_key", key)

    def num_keys(self) -> int:
        return self._call("num_keys")

    # -- closing --------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop serving (rank 0) and free the duplicate communicator. Local: no member waits."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        try:
            self._comm.Free()
        except Exception:  # a revoked communicator cannot always be freed
            pass

    # -- the asking side ------------------------------------------------------------------------
    def _call(self, op: str, *args: Any, wait_for: list[str] | None = None, timeout: timedelta | None = None) -> Any:
        if self._closed:
            raise dist.DistStoreError("yrmpi store: used after its process group was destroyed")
        limit = (timeout if timeout is not None else self.timeout).total_seconds()
        deadline = time.monotonic() + limit if limit > 0 else float("inf")
        if self._table is not None:
            return self._local(op, args, wait_for, deadline, limit)
        with self._lock:
            rid = next(self._ids)
            self._comm.send((rid, op, args), dest=0, tag=TAG_REQUEST)
            backoff = _Backoff()
            status = self._MPI.Status()
            while True:
                msg = self._comm.improbe(0, TAG_REPLY, status)
                if msg is not None:
                    got, ok, value = msg.recv()
                    if got != rid:
                        continue  # the late answer of a request that timed out
                    if not ok:
                        raise dist.DistStoreError(value)
                    return value
                if time.monotonic() >= deadline:
                    raise dist.DistStoreError(_timed_out(op, wait_for, limit))
                backoff.wait()

    def _local(self, op: str, args: tuple, wait_for: list[str] | None, deadline: float, limit: float) -> Any:
        table = self._table
        with table.cond:
            while True:
                done, value = table.apply(op, args)
                if done:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise dist.DistStoreError(_timed_out(op, wait_for, limit))
                table.cond.wait(min(left, 1.0))

    # -- the holding side (group rank 0) --------------------------------------------------------
    def _serve(self) -> None:
        comm, table, status = self._comm, self._table, self._MPI.Status()
        backoff = _Backoff()
        while not self._closed:
            try:
                msg = comm.improbe(self._MPI.ANY_SOURCE, TAG_REQUEST, status)
            except self._MPI.Exception:  # the communicator failed (a member's rank died): stop
                return
            if msg is None:
                with table.cond:  # (answers to parked requests are sent by whoever set the key)
                    self._sends = [r for r in self._sends if not r.Test()]
                backoff.wait()
                continue
            backoff.reset()
            source = status.Get_source()
            rid, op, args = msg.recv()

            def answer(value: Any, ok: bool = True, source: int = source, rid: int = rid) -> None:
                self._sends.append(comm.isend((rid, ok, value), dest=source, tag=TAG_REPLY))

            with table.cond:
                try:
                    done, value = table.apply(op, args)
                except Exception as exc:  # a bad request: the asker raises it
                    answer(f"yrmpi store: {op} failed: {exc!r}", ok=False)
                    continue
                if done:
                    answer(value)
                else:
                    keys = [args[0]] if op == "get" else list(args[0])
                    table.parked.append((keys, answer))


class _Backoff:
    """Spin a little, then sleep with a doubling interval: a waiting member must not hold a core."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.polls, self.sleep = 0, POLL_MIN_S

    def wait(self) -> None:
        self.polls += 1
        if self.polls < SPIN_POLLS:
            return
        time.sleep(self.sleep)
        self.sleep = min(self.sleep * 2, POLL_MAX_S)


def _bytes(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode()
    return bytes(value)


def _timed_out(op: str, keys: list[str] | None, limit: float) -> str:
    what = f"keys {keys}" if keys else op
    return f"yrmpi store: wait for {what} timed out after {limit:.0f} s"

