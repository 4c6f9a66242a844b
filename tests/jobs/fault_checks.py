"""Lifecycle and fault scenarios on real ranks; prints one JSON line per check (see api_checks.py).

Needs at least 6 ranks; the rank-death checks need Open MPI with ULFM (`yrmpi run` turns it on).
"""

import gc
import os
import signal
import tempfile
import time

import numpy as np
from checklib import check, main

import yrmpi as yr

ONE = yr.InvokeOptions(cpu=1000)


def cpu_used() -> int:
    return yr.resources()["total"]["cpu_used"]


def wait_until(predicate, timeout=15.0, what="condition"):
    """Poll a condition (the runtime is asynchronous); returns seconds taken; fails on timeout."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - start


@yr.instance(invoke_options=ONE)
class Worker:
    def __init__(self, tag="w"):
        self.tag = tag
        self.calls = 0

    def ping(self):
        self.calls += 1
        return (self.tag, self.calls, os.getpid())

    def spin(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pass
        return "spun"

    def wait_on(self, other, seconds):
        return yr.get(other.spin.invoke(seconds), timeout=-1)

    def die(self, how, once=None):
        if once is not None:  # a call re-sent to the restarted instance must not kill it again
            if os.path.exists(once):
                return "restarted"
            open(once, "w").close()
        if how == "exit":
            os._exit(3)
        if how == "segv":
            import ctypes

            ctypes.string_at(0)
        os.kill(os.getpid(), signal.SIGKILL)

    def nap_then_exit(self, seconds):
        time.sleep(seconds)
        yr.exit()

    def mark_shutdown_in(self, folder):
        self.marker = folder

    def __yr_shutdown__(self, grace_period_s):
        folder = getattr(self, "marker", None)
        if folder:
            with open(os.path.join(folder, f"shutdown-{self.tag}"), "w") as f:
                f.write(str(grace_period_s))


@yr.instance(invoke_options=yr.InvokeOptions(cpu=100))
class Supervisor:
    def __init__(self, n):
        self.workers = [Worker.invoke(f"child{i}") for i in range(n)]

    def pings(self):
        return yr.get([w.ping.invoke() for w in self.workers])

    def keep(self, handle):
        self.kept = handle
        return yr.get(handle.ping.invoke())

    def use_kept(self):
        return yr.get(self.kept.ping.invoke())

    def forget(self):
        self.kept = None
        return True

    def block_in_worker(self, seconds):
        return yr.get(self.workers[0].spin.invoke(seconds), timeout=-1)


@check
def owner_end_cascades_to_children():
    base = cpu_used()
    sup = Supervisor.invoke(3)
    assert len(yr.get(sup.pings.invoke())) == 3
    assert cpu_used() == base + 100 + 3000
    sup.terminate(is_sync=True)
    took = wait_until(lambda: cpu_used() == base, what="capacity back after the supervisor ended")
    print(f"INFO cascade released 3 workers in {took:.2f} s", flush=True)


@check
def dropping_the_last_handle_ends_the_instance():
    base = cpu_used()
    w = Worker.invoke()
    yr.get(w.ping.invoke())
    assert cpu_used() == base + 1000
    del w
    gc.collect()
    wait_until(lambda: cpu_used() == base, what="capacity back after the handle was dropped")


@check
def a_handle_passed_to_an_instance_keeps_it_alive():
    base = cpu_used()
    sup = Supervisor.invoke(0)
    w = Worker.invoke("shared")
    assert yr.get(sup.keep.invoke(w))[0] == "shared"
    del w
    gc.collect()
    time.sleep(0.5)
    assert yr.get(sup.use_kept.invoke())[0] == "shared", "the holder's handle keeps the worker alive"
    yr.get(sup.forget.invoke())
    wait_until(lambda: cpu_used() == base + 100, what="worker ended once the holder dropped its handle")
    sup.terminate(is_sync=True)


@check
def torn_down_calls_are_interrupted():
    sup = Supervisor.invoke(1)
    yr.get(sup.pings.invoke())
    blocked = sup.block_in_worker.invoke(30)  # the supervisor waits in yr.get, the worker spins in Python
    time.sleep(0.5)
    start = time.monotonic()
    sup.terminate()
    try:
        yr.get(blocked, timeout=20)
        raise AssertionError("the blocked call returned a value after terminate")
    except yr.YRError as exc:
        assert exc.code == 1007, exc
    took = time.monotonic() - start
    print(f"INFO blocked call failed {took:.2f} s after terminate", flush=True)
    base_after = yr.resources()["total"]
    wait_until(lambda: yr.resources()["total"]["cpu_used"] <= base_after["cpu_used"] - 1100 or
               yr.resources()["total"]["cpu_used"] == 0, timeout=15, what="spinning worker interrupted")


@check
def terminations_racing_returning_calls_leave_every_rank_serving():
    """Instances terminated while short calls run and return: the interruption lands inside a
    call or nowhere (never in a serve thread after its call), so every rank still answers."""
    base = settled_usage()["cpu_used"]
    shared = yr.InvokeOptions(cpu=250, concurrency=4)
    for round_ in range(30):
        workers = [Worker.options(shared).invoke(f"r{round_}") for _ in range(8)]
        yr.get([w.ping.invoke() for w in workers])  # constructed: the calls below run at once
        refs = [w.spin.invoke(0.0002 * (i % 2)) for w in workers for i in range(24)]
        time.sleep(0.001 * (round_ % 6))
        for w in workers:
            w.terminate()
        ready, unready = yr.wait(refs, wait_num=len(refs), timeout=60)
        assert not unready, f"round {round_}: {len(unready)} calls neither returned nor failed"
    wait_until(lambda: cpu_used() == base, what="the terminated instances' capacity returned")
    slots = (yr.resources()["total"]["cpu_total"] - base) // 1000
    fresh = [Worker.invoke(f"after{i}") for i in range(slots)]
    pids = {pid for _, _, pid in yr.get([w.ping.invoke() for w in fresh], timeout=30)}
    assert len(pids) == slots, f"{slots} ranks should answer, {len(pids)} did"
    for w in fresh:
        w.terminate()


@check
def shutdown_hook_runs_on_graceful_end():
    marker = tempfile.mkdtemp()
    w = Worker.invoke("hooked")
    yr.get(w.mark_shutdown_in.invoke(marker))
    del w
    gc.collect()
    wait_until(lambda: os.path.exists(os.path.join(marker, "shutdown-hooked")), what="__yr_shutdown__ ran")


@check
def waiting_for_room_that_frees_is_not_a_deadlock():
    free = yr.resources()["total"]
    slots = (free["cpu_total"] - free["cpu_used"]) // 1000
    nappers = [Worker.invoke() for _ in range(slots)]
    naps = [n.nap_then_exit.invoke(3) for n in nappers]
    late = Worker.invoke("late")
    assert yr.get(late.ping.invoke(), timeout=60)[0] == "late", "the creation got room once a napper exited"
    yr.wait(naps, wait_num=len(naps), timeout=30)


def settled_usage():
    """Usage once instances ended by dropped handles have released their capacity."""
    gc.collect()
    last = None
    while True:
        time.sleep(0.3)
        now = yr.resources()["total"]
        if last is not None and now["cpu_used"] == last["cpu_used"]:
            return now
        last = now


@check
def deadlock_is_reported_with_arithmetic():
    free = settled_usage()
    slots = (free["cpu_total"] - free["cpu_used"]) // 1000
    hogs = [Supervisor.options(ONE).invoke(0) for _ in range(slots)]
    yr.get([h.pings.invoke() for h in hogs])
    gc.collect()

    @yr.instance(invoke_options=ONE)
    class Greedy:
        def work(self):
            return yr.get(Worker.invoke().ping.invoke())

    greedy = Greedy.options(yr.InvokeOptions(cpu=0)).invoke()
    start = time.monotonic()
    try:
        yr.get(greedy.work.invoke(), timeout=60)
        raise AssertionError("no deadlock reported")
    except yr.DeadlockError as exc:
        text = str(exc)
        assert "deadlock" in text and "CPUs" in text and "cpu=" in text and "Worker" in text, text
        assert exc.code == 1002
    print(f"INFO deadlock reported after {time.monotonic() - start:.2f} s", flush=True)
    for h in hogs:
        h.terminate()


@yr.instance(invoke_options=yr.InvokeOptions(cpu=300))
class GradWorker:
    def reduce_steps(self, steps):
        grad = np.full(1000, float(yr.collective.rank() + 1))
        for _ in range(steps):
            total = yr.collective.allreduce(grad)
        return float(total[0])


@yr.instance(invoke_options=yr.InvokeOptions(cpu=100))
class GradSupervisor:
    def __init__(self, n):
        self.workers = [GradWorker.invoke() for _ in range(n)]

    def train(self, steps):
        return yr.get([w.reduce_steps.invoke(steps) for w in self.workers])

    def abort_mid_allreduce(self):
        self.pending = self.workers[0].reduce_steps.invoke(1000)  # its peer never joins: it blocks
        time.sleep(0.5)
        yr.exit()


@check
def a_supervisor_abort_tears_down_only_its_subgroup():
    base = settled_usage()["cpu_used"]
    sups = [GradSupervisor.invoke(2) for _ in range(8)]
    runs = [s.train.invoke(50) for s in sups[:7]]
    aborted = sups[7].abort_mid_allreduce.invoke()
    start = time.monotonic()
    try:
        yr.get(aborted, timeout=60)
        raise AssertionError("the aborting supervisor returned")
    except yr.YRError as exc:
        assert exc.code == 1007 and "GradSupervisor" in str(exc) and "yr.exit" in str(exc), str(exc)
    assert yr.get(runs, timeout=120) == [[3.0, 3.0]] * 7, "the other experiments ran on, unaffected"
    took = wait_until(lambda: cpu_used() == base + 7 * (100 + 2 * 300), what="the aborted subgroup's ranks freed")
    print(f"INFO aborted subgroup freed {time.monotonic() - start:.2f} s after the abort call "
          f"(capacity check took {took:.2f} s)", flush=True)
    for s in sups[:7]:
        s.terminate()


def _rank_death(how: str, recover: int):
    base_total = yr.resources()["total"]["cpu_total"]
    w = Worker.options(yr.InvokeOptions(cpu=1000, recover_retry_times=recover)).invoke("victim")
    tag, calls, pid = yr.get(w.ping.invoke())
    start = time.monotonic()
    once = os.path.join(tempfile.mkdtemp(), "died") if recover else None
    try:
        # yr semantics: a call in flight to an instance that restarts is sent again to the new one
        assert yr.get(w.die.invoke(how, once), timeout=30) == "restarted" and recover, "a dead rank answered"
    except yr.YRError as exc:
        assert exc.code == 1007, exc
    took = time.monotonic() - start
    print(f"INFO rank death ({how}) detected in {took:.2f} s", flush=True)
    wait_until(lambda: yr.resources()["total"]["cpu_total"] == base_total - 1000, what="dead rank left the pool")
    if recover:
        tag2, calls2, pid2 = yr.get(w.ping.invoke(), timeout=30)
        assert pid2 != pid and calls2 == 1, "recovered on another rank with its constructor re-run"
    else:
        try:
            yr.get(w.ping.invoke(), timeout=30)
            raise AssertionError("dead instance answered")
        except yr.YRError as exc:
            assert exc.code == 1007
    assert yr.get(Worker.invoke("after").ping.invoke())[0] == "after", "the job goes on"


@check
def rank_killed_by_sigkill_is_detected():
    _rank_death("kill", recover=0)


@check
def rank_that_segfaults_is_recovered_elsewhere():
    _rank_death("segv", recover=1)


@check
def rank_that_exits_is_detected_with_heartbeat():
    if os.environ.get("OMPI_MCA_mpi_ft_detector") != "true":
        print("INFO skipped: os._exit is detected only with YRMPI_FT=heartbeat", flush=True)
        return
    _rank_death("exit", recover=0)


@yr.instance(invoke_options=ONE)
class GroupWorker:
    def reduce_steps(self, steps):
        grad = np.full(1000, float(yr.collective.rank() + 1))
        for _ in range(steps):
            total = yr.collective.allreduce(grad)
        return float(total[0])

    def reduce_or_released(self, steps):
        try:
            return self.reduce_steps(steps)
        except yr.collective.CollectiveError as exc:
            return f"{type(exc).__name__}: {exc}"

    def die(self):
        os.kill(os.getpid(), signal.SIGKILL)


@yr.instance(invoke_options=yr.InvokeOptions(cpu=0))
class GroupOwner:
    def __init__(self, n):
        self.workers = [GroupWorker.invoke() for _ in range(n)]

    def train(self, steps):
        return yr.get([w.reduce_steps.invoke(steps) for w in self.workers], timeout=60)

    def kill_one_mid_allreduce(self):
        """Worker 0 waits in an allreduce for worker 1, whose rank dies: worker 0 is released."""
        survivor = self.workers[0].reduce_or_released.invoke(1)
        time.sleep(0.3)
        self.workers[1].die.invoke()
        return yr.get(survivor, timeout=30)


def _new_group_works(n=2):
    owner = GroupOwner.invoke(n)
    want = float(n * (n + 1) / 2)
    assert yr.get(owner.train.invoke(5), timeout=60) == [want] * n, "a group carved after a rank death"
    owner.terminate(is_sync=True)


@check
def groups_carve_and_allreduce_after_rank_deaths():
    """A worker rank SIGKILLed mid-allreduce, then a second rank killed: each time, new groups
    (carved from the communicator that saw the deaths) allreduce correctly."""
    base_total = yr.resources()["total"]["cpu_total"]
    owner = GroupOwner.invoke(2)
    assert yr.get(owner.train.invoke(2), timeout=60) == [3.0, 3.0]
    released = yr.get(owner.kill_one_mid_allreduce.invoke(), timeout=60)
    assert released.startswith("GroupChangedError") and "ended" in released, released
    wait_until(lambda: yr.resources()["total"]["cpu_total"] == base_total - 1000, what="dead rank left the pool")
    owner.terminate(is_sync=True)
    _new_group_works()
    victim = Worker.invoke("victim2")
    yr.get(victim.ping.invoke())
    try:
        yr.get(victim.die.invoke("segv"), timeout=30)
    except yr.YRError as exc:
        assert exc.code == 1007, exc
    wait_until(lambda: yr.resources()["total"]["cpu_total"] == base_total - 2000, what="second dead rank left")
    _new_group_works()


@yr.instance(invoke_options=ONE)
class DeadlockWorker:
    def step(self):
        return float(yr.collective.allreduce(np.ones(3))[0])


@yr.instance(invoke_options=yr.InvokeOptions(cpu=0))
class TooBigSupervisor:
    def run(self, n):
        workers = [DeadlockWorker.invoke() for _ in range(n)]
        return yr.get([w.step.invoke() for w in workers], timeout=60)


@check
def deadlock_in_a_group_reports_the_deadlock_not_the_group_change():
    """One worker more than fits: the placed ones wait in an allreduce for it, the creation
    fails with DeadlockError, which ends it and changes the group: the supervisor (and the
    driver) see the DeadlockError, the root cause, not the GroupChangedError it caused."""
    free = settled_usage()
    slots = (free["cpu_total"] - free["cpu_used"]) // 1000
    sup = TooBigSupervisor.invoke()
    try:
        yr.get(sup.run.invoke(slots + 1), timeout=90)
        raise AssertionError("no error")
    except yr.DeadlockError as exc:
        assert "deadlock" in str(exc), str(exc)
    sup.terminate(is_sync=True)


if __name__ == "__main__":
    main()
