"""A loopback world: N ranks of yrmpi in one process, without MPI, for the state machines.

Each `LoopRank` implements the `Rank` protocol (yrmpi/core/rank.py) and holds the real roles,
built as `runtime.py` builds them; only the transport and the threads are replaced. Messages
are pickled for real (`Wire.encode`) and loaded at delivery with the receiver installed, so
arguments, refs and handles cross ranks as copies, as on MPI. One FIFO of messages and one of
jobs (what would run on serve threads) are drained in order by `LoopWorld.run`; a wait
(`yr.get` in the driver or inside an instance) runs the world again, re-entrantly, until its
condition holds or nothing is left to do, so a test is deterministic and single-threaded.
Time is a fake clock that only `advance` moves. What is not modelled: threads racing, and so
draining (an instance ended while another thread runs its code), and the collective member
side (it carves MPI communicators): messages a rank has no handler for land in `unhandled`.
"""

from __future__ import annotations

import copy
import itertools
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from yrmpi.core import messages as m
from yrmpi.core import rank as rank_mod
from yrmpi.core.replies import Replies
from yrmpi.runtime import build_roles
from yrmpi.scheduling.placement import RankCapacity
from yrmpi.scheduling.scheduler import Scheduler
from yrmpi.transport.interrupt import InstanceTornDown
from yrmpi.transport.pickling import loads
from yrmpi.transport.wire import Wire


class LoopRank:
    """One rank: the Rank protocol over the world's queues, and the roles this rank plays."""

    def __init__(self, world: LoopWorld, rank: int, settings: dict) -> None:
        self.world = world
        self.rank = rank
        self.size = world.size
        self.settings = settings
        self._ids = itertools.count(1)
        self.replies = Replies()
        self.instance: Any = None  # the instance whose code runs now (one "thread" only)
        self.driver_waits = 0  # the driver's waits in progress (rank 0); a test may raise it
        self.byes: set[int] = set()
        self.created: list[tuple] = []  # what Caller reported to the (absent) collectives
        self.roles = build_roles(self, lambda *created: self.created.append(created))  # as the runtime does
        self.objects, self.caller, self.host = self.roles.objects, self.roles.caller, self.roles.host
        self.scheduler, self.groups = self.roles.scheduler, self.roles.groups
        self.handlers = self._handler_table()

    def _handler_table(self) -> dict[int, Callable[..., None]]:
        """As `Runtime._handler_table`, less the collectives (they need MPI)."""
        table: dict[type, Callable[..., None]] = {
            m.Reply: self.replies.answer, m.RanksFailed: self._on_ranks_failed,
            m.Shutdown: self._on_shutdown, m.Bye: self.byes.add,
        }
        table.update(self.roles.handlers())
        return {m.CODES[kind]: fn for kind, fn in table.items()}

    # -- the Rank protocol -----------------------------------------------------------------
    def new_id(self) -> int:
        return (self.rank << 40) | next(self._ids)

    def clock(self) -> float:
        return self.world.now

    def encode(self, msg: tuple) -> tuple:
        return Wire.encode(msg)

    def send(self, dest: int, msg: tuple) -> None:
        self.send_encoded(dest, self.encode(msg))

    def send_encoded(self, dest: int, encoded: tuple) -> None:
        if self.rank not in self.world.dead:  # a dead process sends nothing
            self.world.messages.append((dest, encoded))

    send_from_handler = send

    def submit(self, job: Callable[[], None]) -> None:
        self.world.jobs.append((self.rank, job))

    def kick(self) -> None:
        pass  # nobody backs off here: the world runs whatever is queued

    def poll(self) -> None:
        self.world.run()

    def wait(self, done: Callable[[], bool], arm: Any, deadline: float | None) -> bool:
        """Run the world until done(); False when nothing is left that could make it true
        (a real wait would time out). Marked waiting like `Runtime.wait`'s `Blocked`: in an
        instance it counts as waiting for the deadlock probe, in the driver as the driver's."""
        inst, me = self.instance, threading.get_ident()
        marked = inst is not None and me not in inst.waiting
        if marked:
            inst.waiting.add(me)
        elif inst is None and self.rank == 0:
            self.driver_waits += 1
        try:
            while True:
                self.world.run(until=lambda: done() or (inst is not None and inst.ended is not None))
                if inst is not None and inst.ended is not None:
                    raise InstanceTornDown()
                if done():
                    return True
                if not self.world.pass_idle_time():
                    return False
        finally:
            if marked:
                inst.waiting.discard(me)
            elif inst is None and self.rank == 0:
                self.driver_waits -= 1

    def request(self, msg: tuple, key: int, timeout: float | None = 60) -> Any:
        slot = self.replies.expect(key)
        try:
            self.send(0, msg)
            return slot.result() if self.wait(slot.done, None, None) else rank_mod.TIMED_OUT
        finally:
            self.replies.forget(key)

    def current_instance(self) -> Any:
        return self.instance

    def set_current_instance(self, inst: Any) -> None:
        self.instance = inst

    def failed_ranks(self) -> set[int]:
        return self.world.dead

    def driver_is_waiting(self) -> bool:
        return self.driver_waits > 0

    # -- the runtime's own handlers and tick -----------------------------------------------
    def _on_ranks_failed(self, ranks: list[int]) -> None:
        """As `Runtime._on_ranks_failed` (a host outliving the driver would exit: it dies)."""
        ranks = [r for r in ranks if r not in self.byes]
        if not ranks:
            return
        if 0 in ranks and self.rank != 0:
            self.world.dead.add(self.rank)
            return
        self.caller.on_ranks_failed(ranks)
        self.objects.on_ranks_failed(ranks)
        if self.scheduler is not None:
            self.scheduler.on_ranks_failed(ranks)

    def _on_shutdown(self) -> None:
        if self.host is not None:
            self.host.shutdown()
            self.send(0, m.Bye(self.rank))

    def tick(self) -> None:
        """What `Runtime._tick` does on every progress round."""
        if self.caller.dropped:
            self.caller.end_dropped()
        if self.scheduler is not None:
            self.scheduler.tick(self.world.now)
            self.roles.kv.tick(self.world.now)


class LoopWorld:
    """Rank 0 (driver and scheduler) and n_ranks - 1 host ranks, each with `cpu_per_rank`
    millicores; `nodes` names the node of each host rank (default: all on one node)."""

    def __init__(self, n_ranks: int, cpu_per_rank: int = 1000, nodes: Sequence[str] | None = None,
                 memory_per_rank: int = 4096) -> None:
        self.size = n_ranks
        self.now = 0.0
        self.messages: deque[tuple[int, tuple]] = deque()  # (dest, encoded message)
        self.jobs: deque[tuple[int, Callable[[], None]]] = deque()  # (rank, job)
        self.dead: set[int] = set()
        self.delivered: list[tuple[int, str]] = []  # (dest, message type) in delivery order
        self.unhandled: list[tuple[int, tuple]] = []  # messages no role of `dest` serves
        self.errors: list[tuple[int, BaseException]] = []  # what a real rank would only log
        self.idle_step: float | None = None
        self.idle_until = 0.0
        nodes = list(nodes or ["node0"] * (n_ranks - 1))
        capacity = [RankCapacity(r, nodes[r - 1], cpu_per_rank, memory_per_rank) for r in range(1, n_ranks)]
        settings = {"job_id": "loopback", "placement": "pack", "capacity": capacity, "prefix_output": False}
        self.ranks = [LoopRank(self, r, copy.deepcopy(settings)) for r in range(n_ranks)]

    @property
    def scheduler(self) -> Scheduler:
        return self.ranks[0].scheduler

    def driver(self) -> LoopRank:
        """Install rank 0: the test body is the driver script and may use `yrmpi` as is."""
        rank_mod.install(self.ranks[0])
        return self.ranks[0]

    def on(self, rank: int, fn: Callable[..., Any], *args: Any) -> Any:
        """Run fn with `rank` installed (its messages, its jobs), then put back what was."""
        rk, before = self.ranks[rank], rank_mod.active()
        inst = rk.instance
        rank_mod.install(rk)
        try:
            return fn(*args)
        except Exception as exc:  # a real rank logs it and goes on; a test should fail
            self.errors.append((rank, exc))
        finally:
            rk.instance = inst
            rank_mod.install(before)

    def _deliver(self, dest: int, encoded: tuple) -> None:
        payload, buffers = encoded
        msg = loads(payload, [bytearray(b.raw()) for b in buffers])  # handles and refs rebuild here
        self.delivered.append((dest, m.name_of(msg[0])))  # not the message: it may hold handles
        handler = self.ranks[dest].handlers.get(msg[0])
        if handler is None:
            self.unhandled.append((dest, msg))
        else:
            handler(*msg[1:])

    def run(self, until: Callable[[], bool] | None = None) -> None:
        """Deliver messages (first) and run jobs, in FIFO order, until nothing is left or until()."""
        while until is None or not until():
            if self.messages:
                dest, encoded = self.messages.popleft()
                if dest not in self.dead:
                    self.on(dest, self._deliver, dest, encoded)
            elif self.jobs:
                rank, job = self.jobs.popleft()
                if rank not in self.dead:
                    self.on(rank, job)
            else:
                return

    def advance(self, seconds: float) -> None:
        """Move the fake clock, run every live rank's tick, and what that set going."""
        self.now += seconds
        for rk in self.ranks:
            if rk.rank not in self.dead:
                self.on(rk.rank, rk.tick)
        self.run()

    def pass_time_when_idle(self, step: float, until: float) -> None:
        """Let waits that find nothing to do move the clock by `step` (up to `until`), as a
        real wait lets time pass: timeouts and the deadlock probe then happen inside it."""
        self.idle_step, self.idle_until = step, until

    def pass_idle_time(self) -> bool:
        if self.idle_step is None or self.now + self.idle_step > self.idle_until:
            return False
        self.advance(self.idle_step)
        return True

    def kill(self, rank: int) -> None:
        """The process of `rank` dies: nothing more reaches it or leaves it, and every live
        rank hears of it as under ULFM (a RanksFailed from its own wire)."""
        self.dead.add(rank)
        self.messages = deque(item for item in self.messages if item[0] != rank)
        self.jobs = deque(item for item in self.jobs if item[0] != rank)
        for rk in self.ranks:
            if rk.rank not in self.dead:
                self.messages.append((rk.rank, Wire.encode(m.RanksFailed([rank]))))
        self.run()
