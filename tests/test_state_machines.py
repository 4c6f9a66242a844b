"""The runtime's state machines (creation, cascades, recovery, names, reference counts, the
deadlock probe, group epochs) driven in one process by the loopback world (tests/loopback.py):
the real roles and the real public API, with the wire replaced by queues and time by a fake
clock, so each scenario is deterministic and takes milliseconds instead of an MPI job."""

from __future__ import annotations

import gc
import inspect

import pytest
from loopback import LoopWorld

import yrmpi as yr
from yrmpi.collective.membership import Collectives
from yrmpi.core import errors
from yrmpi.core import messages as m
from yrmpi.core import rank as rank_mod
from yrmpi.core.groups import class_group
from yrmpi.core.replies import Replies
from yrmpi.runtime import Runtime
from yrmpi.scheduling.deadlock import ANSWER_S, DEADLOCK_AFTER_S, DeadlockProbe

DETACHED = {"lifecycle": "detached"}


@yr.instance
class Worker:
    def __init__(self, tag: object = None) -> None:
        self.tag = tag
        self.calls = 0
        self.born_on = rank_mod.current().rank  # the rank whose Host runs the constructor

    def bump(self) -> tuple:
        self.calls += 1
        return self.born_on, self.calls

    def ping(self) -> object:
        return self.tag


@yr.instance
class Supervisor:
    def spawn(self, n: int, detached_name: str | None = None) -> tuple:
        """Create n workers (and a detached one), wait until all are up, return their ids."""
        self.workers = [Worker.invoke(i) for i in range(n)]
        self.free = []
        if detached_name:
            opts = yr.InvokeOptions(name=detached_name, custom_extensions=DETACHED)
            self.free.append(Worker.options(opts).invoke("free"))
        yr.get([w.ping.invoke() for w in self.workers + self.free], timeout=5)
        return [w.instance_id for w in self.workers], [w.instance_id for w in self.free]


@yr.instance
class Holder:
    def keep(self, handle: yr.InstanceHandle) -> object:
        self.handle = handle
        return yr.get(handle.bump.invoke(), timeout=5)

    def use(self) -> object:
        return yr.get(self.handle.bump.invoke(), timeout=5)

    def drop(self) -> bool:
        self.handle = None
        return True


@yr.instance(invoke_options=yr.InvokeOptions(cpu=1000))
class Greedy:
    def work(self) -> object:
        """Hold a whole rank and wait for a worker that needs a whole rank too."""
        w = Worker.options(yr.InvokeOptions(cpu=1000)).invoke()
        return yr.get(w.ping.invoke(), timeout=60)


@pytest.fixture
def make_world():
    worlds = []

    def make(n_ranks: int = 4, **kwargs) -> LoopWorld:
        world = LoopWorld(n_ranks, **kwargs)
        world.driver()
        worlds.append(world)
        return world

    yield make
    rank_mod.install(None)
    gc.collect()  # handles of this world die now, while no rank is installed to hear of it
    for world in worlds:
        assert not world.errors, world.errors


def iid_of(handle_or_hex) -> int:
    return int(handle_or_hex if isinstance(handle_or_hex, str) else handle_or_hex.instance_id, 16)


def hosted(world: LoopWorld, iid: int) -> list[int]:
    """The live ranks whose Host holds the instance."""
    return [rk.rank for rk in world.ranks[1:] if iid in rk.host.instances and rk.rank not in world.dead]


def cpu_used(world: LoopWorld) -> int:
    return world.scheduler.placement.usage()["total"]["cpu_used"]


# -- cascades ------------------------------------------------------------------------------------


def test_terminating_a_supervisor_ends_its_workers_but_not_a_detached_child(make_world):
    world = make_world(4)
    sup = Supervisor.invoke()
    workers, (free,) = yr.get(sup.spawn.invoke(3, "keeper"), timeout=5)
    sched = world.scheduler
    workers = [iid_of(w) for w in workers]
    free = iid_of(free)
    assert {sched.records[w].owner for w in workers + [free]} == {iid_of(sup)}
    assert cpu_used(world) == 500 * 5

    sup.terminate()
    world.run()

    for iid in workers + [iid_of(sup)]:
        assert iid not in sched.records
        assert hosted(world, iid) == []
    assert sched.records[free].state == "placed" and len(hosted(world, free)) == 1
    assert cpu_used(world) == 500  # the detached one's, nothing else
    assert yr.get(yr.get_instance("keeper").ping.invoke(), timeout=5) == "free"


# -- recovery after a rank dies ------------------------------------------------------------------


def test_an_instance_with_a_restart_left_comes_back_on_another_rank(make_world):
    world = make_world(3)
    h = Worker.options(yr.InvokeOptions(recover_retry_times=1)).invoke()
    assert yr.get([h.bump.invoke(), h.bump.invoke()], timeout=5) == [(1, 1), (1, 2)]
    in_flight = h.bump.invoke()  # still queued when the rank dies: as in yr, sent again to the new instance

    world.kill(1)

    assert yr.get(in_flight, timeout=5) == (2, 1)  # constructed again, on rank 2, then the call
    assert yr.get(h.bump.invoke(), timeout=5) == (2, 2)
    assert world.scheduler.records[iid_of(h)].restarts == 1
    assert hosted(world, iid_of(h)) == [2]


def test_an_instance_killed_to_restart_comes_back_and_one_without_restarts_ends(make_world):
    world = make_world(3)
    h = Worker.options(yr.InvokeOptions(recover_retry_times=1)).invoke()
    assert yr.get([h.bump.invoke(), h.bump.invoke()], timeout=5) == [(1, 1), (1, 2)]
    driver = world.ranks[0]

    driver.send(0, m.Kill(iid_of(h), "killed to restart", False, 0, False, True))  # ray.kill(no_restart=False)
    world.run()

    rec = world.scheduler.records[iid_of(h)]
    assert rec.state == "placed" and rec.restarts == 1
    assert yr.get(h.bump.invoke(), timeout=5)[1] == 1, "a new incarnation: its constructor ran again"
    assert cpu_used(world) == 500, "the old incarnation's capacity was given back"

    driver.send(0, m.Kill(iid_of(h), "again", False, 0, False, True))  # no restart left: it ends
    world.run()
    assert iid_of(h) not in world.scheduler.records
    assert cpu_used(world) == 0


def test_an_instance_without_restarts_ends_with_its_rank(make_world):
    world = make_world(3)
    h = Worker.invoke()
    assert yr.get(h.bump.invoke(), timeout=5) == (1, 1)

    world.kill(1)

    assert iid_of(h) not in world.scheduler.records
    with pytest.raises(yr.InstanceExitedError) as exc:
        yr.get(h.bump.invoke(), timeout=5)
    assert exc.value.code == errors.ERR_INSTANCE_EXITED == 1007
    assert cpu_used(world) == 0


# -- names ---------------------------------------------------------------------------------------


def test_get_if_exists_waits_for_a_named_instance_still_being_placed(make_world):
    world = make_world(2)  # one host rank, 1000 millicores
    blocker = Worker.options(yr.InvokeOptions(cpu=1000)).invoke()
    yr.get(blocker.ping.invoke(), timeout=5)
    named = yr.InvokeOptions(name="svc", get_if_exists=True)
    first = Worker.options(named).invoke("svc")
    second = Worker.options(named).invoke("other")
    world.run()

    rec = world.scheduler.records[iid_of(first)]
    assert rec.state == "waiting" and len(rec.name_waiters) == 1  # no second record, no room yet
    assert len(world.scheduler.records) == 2

    blocker.terminate()
    assert yr.get(second.ping.invoke(), timeout=5) == "svc"
    assert second.instance_id == first.instance_id


def test_names_are_looked_up_and_freed_when_their_instance_ends(make_world):
    world = make_world(3)
    with pytest.raises(yr.YRRuntimeError, match="failed to get instance: svc by name"):
        yr.get_instance("svc")
    h = Worker.options(yr.InvokeOptions(name="svc")).invoke("one")
    found = yr.get_instance("svc")
    assert found.instance_id == h.instance_id
    # As in yr, creating with a live instance's name gives that instance (its arguments unused).
    assert yr.get(Worker.options(yr.InvokeOptions(name="svc")).invoke("x").ping.invoke(), timeout=5) == "one"

    h.terminate(is_sync=True)

    assert ("", "svc") not in world.scheduler.names
    with pytest.raises(yr.YRRuntimeError, match="no instance named"):
        yr.get_instance("svc")  # (the message says yr's "failed to get instance", then this)
    again = Worker.options(yr.InvokeOptions(name="svc")).invoke("two")
    assert yr.get(yr.get_instance("svc").ping.invoke(), timeout=5) == "two"
    assert again.instance_id != h.instance_id


def test_a_name_shared_on_the_creators_rank_survives_a_restart(make_world):
    world = make_world(3)
    named = yr.InvokeOptions(name="svc", get_if_exists=True, recover_retry_times=1)
    first = Worker.options(named).invoke()
    assert yr.get(first.bump.invoke(), timeout=5) == (1, 1)
    second = Worker.options(named).invoke()
    assert yr.get(second.bump.invoke(), timeout=5) == (1, 2)

    world.kill(1)

    assert yr.get([first.bump.invoke(), second.bump.invoke()], timeout=5) == [(2, 1), (2, 2)]


# -- reference counts of handles -----------------------------------------------------------------


def test_dropping_the_last_handle_ends_the_instance_after_the_calls_already_sent(make_world):
    world = make_world(3)
    h = Worker.invoke()
    iid = iid_of(h)
    assert yr.get(h.bump.invoke(), timeout=5) == (1, 1)
    refs = [h.bump.invoke() for _ in range(3)]

    del h
    assert iid in world.scheduler.records  # the poller's tick ends it, not the finalizer
    world.advance(0.1)

    assert yr.get(refs, timeout=5) == [(1, 2), (1, 3), (1, 4)]
    assert iid not in world.scheduler.records and hosted(world, iid) == []
    assert cpu_used(world) == 0


def test_a_handle_passed_to_another_instance_keeps_it_alive_until_that_one_drops_it(make_world):
    world = make_world(3)
    h = Worker.invoke()
    iid = iid_of(h)
    holder = Holder.invoke()
    assert yr.get(holder.keep.invoke(h), timeout=5) == (1, 1)

    del h
    world.advance(0.1)
    world.advance(0.1)
    assert yr.get(holder.use.invoke(), timeout=5) == (1, 2)  # still alive: the holder refers to it
    assert iid in world.scheduler.records

    assert yr.get(holder.drop.invoke(), timeout=5)
    world.advance(0.1)  # the holder's rank gives its reference back to the owner
    assert iid in world.scheduler.records
    world.advance(0.1)  # the owner, holding none now, ends it

    assert iid not in world.scheduler.records and hosted(world, iid) == []


# -- the deadlock probe --------------------------------------------------------------------------


class ProbeRank:
    """Just what DeadlockProbe uses of a rank: ids, a clock, send, whether the driver waits."""

    rank, size, settings = 0, 3, {}

    def __init__(self) -> None:
        self.now = 0.0
        self.sent: list[tuple[int, tuple]] = []
        self.driver_waits = True
        self._ids = iter(range(1, 1000))

    def new_id(self) -> int:
        return next(self._ids)

    def clock(self) -> float:
        return self.now

    def send(self, dest: int, msg: tuple) -> None:
        self.sent.append((dest, msg))

    def driver_is_waiting(self) -> bool:
        return self.driver_waits


class ProbeBench:
    def __init__(self) -> None:
        self.here = ProbeRank()
        self.last_change = 0.0
        self.deadlocks = 0
        self.probe = DeadlockProbe(self.here, lambda: self.last_change, self._deadlock)

    def _deadlock(self) -> None:
        self.deadlocks += 1

    def round(self, now: float, answers: dict | None = None) -> None:
        """A tick at `now` (creations waiting since 0 on ranks 1, 2); the ranks that answer the
        probe it sends (if any) answer `answers[rank]`: (running, waiting, queued) per instance."""
        self.here.now = now
        before = len(self.here.sent)
        self.probe.check(now, 0.0, [1, 2])
        probes = [(dest, msg) for dest, msg in self.here.sent[before:] if isinstance(msg, m.Probe)]
        if probes:
            assert sorted(dest for dest, _ in probes) == [1, 2]
        for dest, msg in probes:
            if answers is not None and dest in answers:
                self.probe.on_probe_result(msg.probe_id, dest, {100 + dest: answers[dest]})


IDLE = {1: (0, 1, 0), 2: (0, 1, 0)}  # an instance per rank, waiting inside yrmpi


def test_two_idle_rounds_with_the_driver_waiting_declare_one_deadlock():
    bench = ProbeBench()
    bench.round(1.0, IDLE)  # creations have not waited DEADLOCK_AFTER_S yet: no probe
    assert bench.here.sent == []
    bench.round(2.0, IDLE)
    assert bench.deadlocks == 0
    bench.round(4.0, IDLE)
    assert bench.deadlocks == 1
    bench.round(6.0, IDLE)  # counting starts again
    assert bench.deadlocks == 1


@pytest.mark.parametrize("busy", [(1, 0, 0), (0, 0, 1)], ids=["running", "queued"])
def test_a_busy_round_resets_the_count(busy):
    bench = ProbeBench()
    bench.round(2.0, IDLE)
    bench.round(4.0, {1: (0, 1, 0), 2: busy})
    bench.round(6.0, IDLE)
    assert bench.deadlocks == 0
    bench.round(8.0, IDLE)
    assert bench.deadlocks == 1


def test_a_capacity_change_or_a_driver_not_waiting_resets_the_count():
    bench = ProbeBench()
    bench.round(2.0, IDLE)
    bench.last_change = 2.5  # an instance ended: room changed, creations may fit now
    bench.round(3.0, IDLE)  # too soon after the change: no probe, the count restarts
    bench.round(4.5, IDLE)
    assert bench.deadlocks == 0
    bench.here.driver_waits = False  # the driver script runs: it may still free something
    bench.round(6.5, IDLE)
    bench.here.driver_waits = True
    bench.round(8.5, IDLE)
    assert bench.deadlocks == 0
    bench.round(10.5, IDLE)
    assert bench.deadlocks == 1


def test_an_unanswered_round_is_abandoned_and_resets_the_count():
    bench = ProbeBench()
    bench.round(2.0, IDLE)
    bench.round(4.0, {1: IDLE[1]})  # rank 2 is busy in native code: no answer
    stale = [msg for _, msg in bench.here.sent if isinstance(msg, m.Probe)][-1]
    bench.round(4.0 + ANSWER_S / 2, IDLE)  # still waiting for it: no new round
    assert sum(isinstance(msg, m.Probe) for _, msg in bench.here.sent) == 4
    bench.round(4.0 + ANSWER_S + 0.5, IDLE)  # abandoned, and the count with it
    bench.probe.on_probe_result(stale.probe_id, 2, {102: IDLE[2]})  # a late answer counts for nothing
    bench.round(8.0, IDLE)
    assert bench.deadlocks == 0
    bench.round(10.0, IDLE)
    assert bench.deadlocks == 1


def test_creations_behind_instances_that_wait_end_in_a_deadlock_error(make_world):
    world = make_world(3)  # two host ranks of 1000 millicores: one Greedy fills each
    greedy = [Greedy.invoke(), Greedy.invoke()]
    refs = [g.work.invoke() for g in greedy]
    world.pass_time_when_idle(0.5, 20.0)  # a driver's wait lets time pass: ticks and probes run

    with pytest.raises(yr.DeadlockError, match="resource deadlock"):
        yr.get(refs, timeout=60)

    assert DEADLOCK_AFTER_S <= world.now < 10  # the probe, not the 30 s schedule timeout
    assert world.scheduler.waiting == []
    assert all(world.scheduler.records[iid_of(g)].state == "placed" for g in greedy)
    assert sum(isinstance(msg, m.Probe) for _, msg in world.unhandled) == 0
    assert [name for _, name in world.delivered].count("Probe") >= 4  # two rounds, two ranks


# -- group epochs in the registry -----------------------------------------------------------------


def sent_to(world: LoopWorld, kind: type, start: int = 0) -> dict[int, list]:
    """The messages of one kind that reached ranks with no handler for them (the collectives'),
    by rank, since `start` (an index into world.unhandled)."""
    out: dict[int, list] = {}
    for dest, msg in world.unhandled[start:]:
        if msg[0] == m.CODES[kind]:
            out.setdefault(dest, []).append(kind(*msg[1:]))
    return out


def join(world: LoopWorld, gid: tuple, members: list[tuple[int, int]], prev_epoch: int = 0) -> None:
    for iid, rank in members:
        world.ranks[rank].send(0, m.GroupJoin(gid, iid, rank, prev_epoch))
    world.run()


def test_the_registry_switches_a_group_over_epoch_by_epoch(make_world):
    world = make_world(3)  # two workers fit on each host rank
    workers = [Worker.invoke(i) for i in range(3)]
    yr.get([w.ping.invoke() for w in workers], timeout=5)
    iids = [iid_of(w) for w in workers]
    members = [(iid, world.scheduler.records[iid].rank) for iid in iids]
    assert [rank for _, rank in members] == [1, 1, 2]
    assert world.ranks[0].created == [(None, "Worker", iid) for iid in iids]
    gid = class_group(None, "Worker")

    join(world, gid, members[:2])
    assert sent_to(world, m.GroupGo) == {}  # not every member has joined
    join(world, gid, members[2:])
    go = sent_to(world, m.GroupGo)
    assert sorted(go) == [1, 2] and all(len(msgs) == 1 for msgs in go.values())
    first = go[1][0]
    assert go[2][0] == first and first.view == members and first.tag > 0
    assert sent_to(world, m.GroupActive) == {0: [m.GroupActive(gid)]}  # the creator's rank learns it

    mark = len(world.unhandled)
    join(world, gid, members[:1], prev_epoch=first.epoch)  # on its way into the next epoch
    workers[2].terminate()
    world.run()
    changed = sent_to(world, m.GroupChanged, mark)
    assert sorted(changed) == [1, 2]
    hard = changed[1][0]
    assert changed[2] == [hard] and hard.hard and hard.version > first.version
    fails = sent_to(world, m.GroupFail, mark)  # the join in progress cannot succeed any more
    assert list(fails) == [1] and [f.iid for f in fails[1]] == [iids[0]] and hard.reason in fails[1][0].message

    mark = len(world.unhandled)
    added = Worker.invoke(9)
    yr.get(added.ping.invoke(), timeout=5)
    soft = sent_to(world, m.GroupChanged, mark)
    assert sorted(soft) == [1, 2] and not soft[1][0].hard and soft[1][0].version > hard.version

    mark = len(world.unhandled)
    members = members[:2] + [(iid_of(added), world.scheduler.records[iid_of(added)].rank)]
    join(world, gid, members, prev_epoch=first.epoch)
    again = sent_to(world, m.GroupGo, mark)
    second = again[members[0][1]][0]
    assert second.view == members and second.epoch > first.epoch and second.tag != first.tag
    assert second.version == soft[1][0].version


# -- the message contract --------------------------------------------------------------------------


def runtime_shell(world: LoopWorld, rank: int) -> Runtime:
    """A Runtime without MPI around the loopback rank's roles: enough for `_handler_table`."""
    rk = world.ranks[rank]
    rt = object.__new__(Runtime)
    rt.replies, rt.roles, rt.caller, rt.objects = Replies(), rk.roles, rk.caller, rk.objects
    rt.host, rt.scheduler, rt.groups = rk.host, rk.scheduler, rk.groups
    rt.collectives = object.__new__(Collectives)  # its handlers() needs no communicator
    return rt


def test_every_message_has_one_handler_whose_parameters_are_its_fields(make_world):
    world = make_world(2)
    driver, host = runtime_shell(world, 0), runtime_shell(world, 1)
    own = {m.Reply: driver.replies.answer, m.RanksFailed: driver._on_ranks_failed,
           m.Shutdown: driver._on_shutdown, m.Bye: driver._on_bye}
    roles = {"runtime": own, "caller": driver.caller.handlers(), "objects": driver.objects.handlers(),
             "host": host.host.handlers(), "scheduler": driver.scheduler.handlers(),
             "groups": driver.groups.handlers(), "collectives": driver.collectives.handlers(),
             "liveness": world.ranks[0].roles.liveness.handlers(),
             "kv": world.ranks[0].roles.kv.handlers()}
    owners: dict[type, list[str]] = {}
    for role, table in roles.items():
        for kind in table:
            owners.setdefault(kind, []).append(role)
    assert {kind: who for kind, who in owners.items() if len(who) != 1} == {}
    assert set(owners) == set(m.TYPES)

    for table in roles.values():
        for kind, handler in table.items():
            params = list(inspect.signature(handler).parameters)
            assert params == list(kind._fields), f"{kind.__name__}: {handler.__qualname__}{params}"

    # The runtime's own table serves what the roles of each rank register, and the loopback
    # ranks serve the same but the collectives' messages.
    for rt, rk in ((driver, world.ranks[0]), (host, world.ranks[1])):
        table = rt._handler_table()
        coll = {m.CODES[kind] for kind in roles["collectives"]}
        assert set(rk.handlers) == set(table) - coll
        assert table[m.CODES[m.Reply]] == rt.replies.answer
