"""One rank's runtime: the composition root that builds the wire, the progress engine and the
roles this rank plays, and wires them together.

Every rank is a caller and answers fetches; rank 0 also runs the scheduler (and the driver
script); the other ranks host instances. The runtime implements the `Rank` protocol
(core/rank.py) that the roles are typed against, registers each role's handlers per message
type, and connects the events that cross roles (a creation grows a worker group; a rank
death reaches every role). `start` is collective over the world communicator.
"""

from __future__ import annotations

import itertools
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from .collective import Collectives
from .core import devices
from .core import messages as m
from .core import rank as _rank
from .core.errors import YRRuntimeError
from .core.log import install_default_handler, log
from .core.options import Config, first_given
from .core.refs import wait_slot
from .core.replies import Replies
from .roles.caller import Caller
from .roles.host import Host
from .roles.objects import Objects
from .roles.output import install_prefixing
from .scheduling.groups import GroupRegistry
from .scheduling.kv import KvStore
from .scheduling.liveness import Liveness
from .scheduling.placement import Demand, Placement, RankCapacity
from .scheduling.scheduler import Scheduler
from .transport.interrupt import InstanceTornDown, Shield
from .transport.progress import Progress
from .transport.wire import Wire

MIN_RANK_MEMORY_MB = 1024
current, active, ever_started, TIMED_OUT = _rank.current, _rank.active, _rank.ever_started, _rank.TIMED_OUT


def require_hosts(world: Any) -> None:
    """A one-rank world (srun with the wrong PMI plugin, mpiexec -n 1) cannot host anything."""
    if world.Get_size() < 2:
        raise YRRuntimeError(
            "this job has 1 rank: yrmpi needs a driver and at least one host rank. Under srun, "
            "use --mpi=pmix (Open MPI) or --mpi=pmi2 (MPICH); under mpiexec, pass -n 2 or more")


def fault_tolerant() -> bool:
    """True when the MPI library reports rank deaths to survivors (Open MPI started with ULFM)."""
    return os.environ.get("OMPI_MCA_mpi_ft_enable") == "1"


def _node_memory_mb() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 4096


@dataclass
class Roles:
    """The roles one rank plays: every rank calls and stores objects; rank 0 schedules and keeps
    the group registry; the others host instances."""

    objects: Objects
    caller: Caller
    host: Host | None
    scheduler: Scheduler | None
    groups: GroupRegistry | None
    kv: KvStore | None = None  # rank 0: the job's key-value store (yr.kv_*)
    liveness: Liveness | None = None  # every rank: hung-rank detection (beats on hosts, the watch on rank 0)

    def handlers(self) -> dict[type, Callable[..., None]]:
        table: dict[type, Callable[..., None]] = {}
        for role in (self.objects, self.caller, self.host, self.scheduler, self.groups, self.kv, self.liveness):
            if role is not None:
                table.update(role.handlers())
        return table


def build_roles(here: Any, on_created: Callable[[int | None, str, int], None]) -> Roles:
    """Build and wire the roles of rank `here` (a `Rank` with its agreed `settings`): the one
    place that says which role needs what of another (the test harness builds them here too)."""
    view = Placement(here.settings["capacity"])  # every rank's capacity, to refuse at the call site
    caller = Caller(here, lambda cpu, memory, custom: view.explain_unplaceable(Demand(cpu, memory, custom)),
                    on_created)
    scheduler = groups = None
    if here.rank == 0:
        scheduler = Scheduler(here, Placement(here.settings["capacity"]))
        groups = GroupRegistry(here, scheduler.records)
        scheduler.watchers.append(groups)  # records added, ended, restarted change groups
    host = Host(here) if here.rank != 0 else None
    kv = KvStore(here) if here.rank == 0 else None
    # Hosts holding instances beat; rank 0 watches the ranks it placed instances on.
    liveness = Liveness(here, None if host is None else (lambda: bool(host.instances)),
                        None if scheduler is None else (
                            lambda: {rec.rank for rec in scheduler.records.values() if rec.state == "placed"}))
    return Roles(Objects(here), caller, host, scheduler, groups, kv, liveness)


class Runtime:
    def __init__(self, comm: Any, config: Config | None) -> None:
        install_default_handler()
        self.wire = Wire(comm)
        # Dups a third communicator: groups are carved from it. It reads the caller's table of
        # instances, which is built below (the caller reports creations to the engine).
        self.collectives = Collectives(self, comm, lambda: self.caller.instances)
        self.rank = self.wire.rank
        self.size = self.wire.size
        self.context = threading.local()
        self._ids = itertools.count(1)
        self.clock = time.monotonic
        self.stopped = threading.Event()
        self.replies = Replies()
        self._driver_waiting = 0
        self._byes: set[int] = set()
        self.settings = self._bootstrap(comm, config)
        self.roles = roles = build_roles(self, self.collectives.created)
        self.objects, self.caller, self.host = roles.objects, roles.caller, roles.host
        self.scheduler, self.groups = roles.scheduler, roles.groups
        roles.liveness.mark_failed = self.wire.failed.update  # a rank declared hung gets no more sends
        self.progress = Progress(self.wire.receive, self.dispatch, self._tick)
        # The Rank protocol's methods used on every call are the mechanisms' own (no wrapper call):
        self.encode, self.send_encoded = self.wire.encode, self.wire.send_encoded
        self.submit, self.kick = self.progress.submit, self.progress.kick
        self.set_current_instance = partial(setattr, self.context, "instance")  # (C calls only)
        self._handlers = self._handler_table()

    def _bootstrap(self, comm: Any, config: Config | None) -> dict:
        """Learn which ranks share a node, then agree on settings and capacities (collective)."""
        from mpi4py import MPI

        world = self.wire.ctrl
        node_comm = world.Split_type(MPI.COMM_TYPE_SHARED)
        leader = node_comm.bcast(self.rank, root=0)
        node_size = node_comm.Get_size()
        node_comm.Free()
        gpus_seen, gpus_from = devices.detect()
        me = (f"{socket.gethostname()}#{leader}", node_size, _node_memory_mb(), gpus_seen)
        table = world.gather(me, root=0)
        settings = None
        if self.rank == 0:
            cfg = (config or Config()).resolved()
            ranks = []
            gpus = devices.assign({r: (row[0], row[3]) for r, row in enumerate(table) if r})  # per node
            for rank, (node, size, mem, _) in enumerate(table):
                if rank == 0:
                    continue
                # Node memory over its ranks, but never below MIN_RANK_MEMORY_MB: memory is logical
                # here (nothing enforces it), and the default request is 500 MB.
                memory = first_given(cfg.memory_per_rank, max(mem // size, MIN_RANK_MEMORY_MB))
                custom = dict(cfg.custom_resources)
                if rank in gpus:  # detected GPUs replace a logical count
                    custom["gpu"] = len(gpus[rank])
                ranks.append(RankCapacity(rank, node, cfg.cpu_per_rank, memory, custom))
            if gpus and "gpu" in cfg.custom_resources:
                log.info("GPUs detected (%s): the rank capacities count them instead of gpu=%s",
                         gpus_from, cfg.custom_resources["gpu"])
            settings = {"job_id": secrets.token_hex(6), "prefix_output": cfg.prefix_output,
                        "placement": cfg.placement, "capacity": ranks, "gpus": gpus}
            if not fault_tolerant():
                log.warning("fault tolerance is off (no ULFM: MPICH, srun direct launch, or YRMPI_FT=0): "
                            "a rank that dies ends the whole job. `yrmpi run` with Open MPI turns it on.")
        settings = world.bcast(settings, root=0)
        mine = settings["gpus"].get(self.rank)
        if mine is not None:  # a host rank of a GPU node: it sees only its share, before any user code
            late = devices.bind(mine)
            if late:
                log.warning("rank %d: %s", self.rank, late)
        return settings

    # -- the Rank protocol (core/rank.py) ---------------------------------------------------
    def current_instance(self) -> Any:
        return getattr(self.context, "instance", None)

    def failed_ranks(self) -> set[int]:
        return self.wire.failed

    def poll(self) -> None:
        self.progress.poll()

    # -- messages --------------------------------------------------------------------------
    def new_id(self) -> int:
        return (self.rank << 40) | next(self._ids)

    def send(self, dest: int, msg: tuple) -> None:
        inst = getattr(self.context, "instance", None)  # (current_instance, inline: on every result)
        if inst is None or not inst.threads:  # not from inside an instance's call (a result, say)
            self.wire.send(dest, msg)
        else:
            with Shield(inst):  # sent from an instance's call: the message goes out whole
                self.wire.send(dest, msg)
        if dest == self.rank:
            self.progress.kick()

    def send_from_handler(self, dest: int, msg: tuple) -> None:
        """Send from a message handler, which runs on the polling thread. A large message blocks
        its sender until the peer receives it, and a peer doing the same towards us would wait
        for our poll forever (two ranks fetching from each other): such a message is sent by a
        serve thread instead, while this thread goes on receiving. (Only for messages whose
        order does not matter: a deferred one may be overtaken by the next.)"""
        if dest == self.rank:
            self.send(dest, msg)
            return
        encoded = self.wire.encode(msg)
        if self.wire.waits_for_receiver(*encoded):
            self.progress.submit(partial(self.wire.send_encoded, dest, encoded))
        else:
            self.wire.send_encoded(dest, encoded)

    def dispatch(self, msg: Any) -> None:
        """Run a message's handler. A handler bug is reported, never allowed to stop polling."""
        try:
            self._handlers[msg[0]](*msg[1:])
        except Exception:
            log.exception("rank %d: internal error handling %s", self.rank, m.name_of(msg[0]))

    def _tick(self, now: float) -> None:
        if self.caller.dropped:
            self.caller.end_dropped()
        self.roles.liveness.tick(now)
        if self.scheduler is not None:
            self.scheduler.tick(now)
            self.roles.kv.tick(now)

    def _handler_table(self) -> dict:
        """Message code -> handler: every role registers the messages it serves."""
        table: dict[type, Callable[..., None]] = {
            m.Reply: self.replies.answer, m.RanksFailed: self._on_ranks_failed,
            m.Shutdown: self._on_shutdown, m.Bye: self._on_bye,
        }
        table.update(self.roles.handlers())
        table.update(self.collectives.handlers())
        return {m.CODES[kind]: fn for kind, fn in table.items()}

    def _on_ranks_failed(self, ranks: list[int]) -> None:
        ranks = [r for r in ranks if r not in self._byes]  # hosts that finished and exited
        if not ranks or self.stopped.is_set():
            return
        if self.rank == 0:
            log.warning("rank(s) %s died (process failure); the job goes on", ranks)
        if 0 in ranks and self.rank != 0:
            log.error("rank %d: the driver (rank 0) died; ending this rank", self.rank)
            os._exit(1)
        self.caller.on_ranks_failed(ranks)
        self.objects.on_ranks_failed(ranks)
        if self.scheduler is not None:
            self.scheduler.on_ranks_failed(ranks)

    # -- waiting and interruption ----------------------------------------------------------
    def blocked(self) -> Blocked:
        """Mark the calling thread as waiting inside yrmpi (deadlock detection, teardown)."""
        return Blocked(self)

    def driver_is_waiting(self) -> bool:
        return self._driver_waiting > 0

    def check_interrupt(self) -> None:
        """Inside a wait: raise if this thread's instance has been ended meanwhile."""
        _raise_if_ended(self.current_instance())

    def wait(self, done: Callable[[], bool], arm: Callable[[Callable[[], None]], None] | None,
             deadline: float | None) -> bool:
        """Wait (polling) until done(), marked as blocked inside yrmpi; in an instance, the
        wait ends with InstanceTornDown if the instance is ended meanwhile. See Progress.wait."""
        with Blocked(self) as inst:
            check = None if inst is None else partial(_raise_if_ended, inst)
            return self.progress.wait(done, arm, deadline, check)

    # -- request/reply to the scheduler ----------------------------------------------------
    def request(self, msg: tuple, key: int, timeout: float | None = 60) -> Any:
        """Send `msg` to the scheduler and wait for the reply that carries `key`."""
        slot = self.replies.expect(key)
        try:
            self.send(0, msg)
            if not wait_slot(slot, None if timeout is None else self.clock() + timeout):
                return TIMED_OUT
            return slot.result()
        finally:
            self.replies.forget(key)

    # -- life ------------------------------------------------------------------------------
    def start(self) -> None:
        _rank.install(self)
        if self.host is not None:  # before any serve thread exists: every line of every call goes through it
            install_prefixing(self, bool(self.settings.get("prefix_output")))
        self.progress.start()

    def _on_shutdown(self) -> None:
        if self.host is not None:
            threading.Thread(target=self._host_shutdown, daemon=True).start()

    def _host_shutdown(self) -> None:
        self.host.shutdown()
        self.send(0, m.Bye(self.rank))
        self.stopped.set()

    def _on_bye(self, rank: int) -> None:
        self._byes.add(rank)

    def wait_for_byes(self, hosts: list[int], timeout: float) -> None:
        """The driver's last step: every host has ended its instances (or died, or timed out)."""
        self.progress.wait(lambda: self._byes.issuperset(set(hosts) - self.wire.failed), None,
                           self.clock() + timeout)

    def stop(self) -> None:
        self.progress.stop()
        self.collectives.free()
        self.wire.free()
        _rank.install(None)


class Blocked(Shield):
    """`with rt.blocked():` around a wait (a class, not a generator: it is on every `yr.get`).
    In an instance's call, a Shield; in the driver, counted (deadlock detection)."""

    __slots__ = ("rt",)

    def __init__(self, rt: Runtime) -> None:
        super().__init__(getattr(rt.context, "instance", None))  # (current_instance, inline)
        self.rt = rt

    def __enter__(self) -> Any:
        """The instance this thread serves a call of, if any."""
        if self.inst is not None:
            super().__enter__()
        elif self.rt.rank == 0:
            self.rt._driver_waiting += 1
        return self.inst

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        if self.inst is not None:
            super().__exit__(exc_type)
        elif self.rt.rank == 0:
            self.rt._driver_waiting -= 1


def _raise_if_ended(inst: Any) -> None:
    if inst is not None and inst.ended is not None:
        raise InstanceTornDown()

