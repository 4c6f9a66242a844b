"""Communicator subgroups on real ranks: results, co-location, concurrency, membership changes,
interruption, mismatches. tests/test_collective.py runs it (one MPI launch per configuration)
and turns each check into a test result.
"""

import os
import time

import checklib
import numpy as np
from mpi4py import MPI

import yrmpi as yr

C = yr.collective
TMP = os.environ["COLL_TMP"]
state = {}  # what one check leaves for the next ones
made = []  # what the running check created: ended when it ends


def check(fn):
    """A check (in the order they run: each leaves the capacity the next one counts on, 3 host
    ranks) that ends whatever it created, so that a failure does not cascade."""
    return checklib.check(checklib.ending_what_it_made(made)(fn))


def checks(simple):
    """Every collective, every op, several dtypes; each member checks against numpy itself."""
    r, n = C.rank(), C.size()

    def inp(k, dt):
        return (np.arange(6) % 3 + k + 1).astype(dt)

    def every(dt):
        return np.stack([inp(k, dt) for k in range(n)])

    for dt in (np.float64, np.float32, np.int32, np.int64, np.uint8, np.complex128):
        for op, f in (("sum", np.sum), ("max", np.max), ("min", np.min), ("prod", np.prod), ("mean", np.mean)):
            if (np.dtype(dt).kind == "c" and op in ("max", "min")) or (np.dtype(dt).kind in "iu" and op == "mean"):
                continue
            got = C.allreduce(inp(r, dt), op=op)
            want = f(every(dt), axis=0).astype(dt)
            assert got.dtype == np.dtype(dt) and np.allclose(got, want), (dt, op, got, want)
    flags = np.array([r == 0, True, False])
    assert C.allreduce(flags, op="max").tolist() == [True, True, False]
    assert C.allreduce(flags, op="min").tolist() == [n == 1, True, False]
    x = inp(r, np.float64)
    assert C.allreduce(x, out=x) is x and np.allclose(x, every(np.float64).sum(0))
    out = np.empty(6, dtype=np.float32)
    assert C.allreduce(inp(r, np.float32), out=out) is out and np.allclose(out, every(np.float32).sum(0))
    strided = np.arange(12.0)[::2] + r
    assert np.allclose(C.allreduce(strided), sum(np.arange(12.0)[::2] + k for k in range(n)))
    assert np.array_equal(C.allgather(inp(r, np.int32)), every(np.int32))
    assert C.allgather(f"m{r}") == [f"m{k}" for k in range(n)]
    root = n - 1
    got = C.broadcast(inp(root, np.float32) if r == root else None, root=root)
    assert got.dtype == np.float32 and np.array_equal(got, inp(root, np.float32))
    buf = np.zeros(6)
    got = C.broadcast(inp(0, np.float64) if r == 0 else buf, root=0)
    assert np.array_equal(got, inp(0, np.float64)) and (r == 0 or got is buf)
    assert C.broadcast({"from": r, "list": [1, 2]} if r == 0 else None) == {"from": 0, "list": [1, 2]}
    rs = C.reduce_scatter(np.arange(2 * n, dtype=np.float64) * (r + 1))
    assert np.allclose(rs, np.arange(2 * r, 2 * r + 2) * n * (n + 1) / 2), rs
    assert C.allreduce(r + 1) == n * (n + 1) // 2
    assert C.allreduce(float(r), op="max") == n - 1
    assert C.allreduce(2.0, op="mean") == 2.0
    C.barrier()
    if simple:
        comm = C.comm()
        assert comm.Get_rank() == r and comm.Get_size() == n and C.comm() is comm
        assert comm.allreduce(r, op=MPI.SUM) == n * (n - 1) // 2
    else:
        try:
            C.comm()
        except C.CollectiveError as exc:
            assert "share ranks" in str(exc)
        else:
            raise AssertionError("comm() must refuse members that share ranks")
    return r, n, MPI.COMM_WORLD.Get_rank()


@yr.instance(invoke_options=yr.InvokeOptions(cpu=1000))
class Whole:
    def checks(self):
        return checks(True)

    def ranks(self):
        return C.rank(), C.size()

    def pair(self, x):
        return C.rank("pair"), C.size("pair"), C.allreduce(np.array([x]), group="pair")[0]


@yr.instance(invoke_options=yr.InvokeOptions(cpu=250))
class Shared:
    def checks(self):
        return checks(False)


@yr.instance(invoke_options=yr.InvokeOptions(cpu=250))
class Member:
    def step(self, value):
        return C.rank(), C.size(), C.allreduce(np.array([value], dtype=np.int64))[0], MPI.COMM_WORLD.Get_rank()

    def loop(self, rounds):
        r, n = C.rank(), C.size()
        total = 0
        for i in range(rounds):
            got = C.allreduce(np.full(1000, r + i, dtype=np.float64))
            assert np.all(got == n * i + n * (n - 1) / 2), (i, got[0])
            total += got[0]
        return r, n, MPI.COMM_WORLD.Get_rank(), total

    def blocked(self, value, log=None):
        """Join a collective that some member never joins: report how it ended."""
        try:
            C.allreduce(np.array([value]))
            outcome = "completed"
        except BaseException as exc:
            outcome = type(exc).__name__
            if log:
                with open(log, "a") as f:
                    f.write(f"{outcome} {time.time()}\n")
            if not isinstance(exc, Exception):
                raise
        return outcome, time.time()

    def mismatch(self, shape, dtype="float64"):
        try:
            C.allreduce(np.ones(shape, dtype=dtype))
            return "completed"
        except C.CollectiveMismatchError as exc:
            return "mismatch: " + str(exc)


@yr.instance(invoke_options=yr.InvokeOptions(cpu=0))
class Supervisor:
    def __init__(self, count, cpu=250):
        self.workers = [Member.options(yr.InvokeOptions(cpu=cpu)).invoke() for _ in range(count)]

    def run(self, rounds):
        return yr.get([w.loop.invoke(rounds) for w in self.workers], timeout=120)

    def grow(self, rounds):
        """Add a worker between rounds: the old ones switch over at the next collective."""
        self.workers.append(Member.invoke())
        return self.run(rounds)

    def start_blocked(self, log):
        # all but the last member enter an allreduce the last one never calls
        self.pending = [w.blocked.invoke(1.0, log) for w in self.workers[:-1]]
        return len(self.pending)


@yr.invoke(invoke_options=yr.InvokeOptions(cpu=0))
def stateless():
    return C.allreduce(np.ones(1))


def new(creator, *args):
    handle = creator.invoke(*args)
    made.append(handle)
    return handle


@check
def every_collective_one_member_per_rank():
    ws = [Whole.invoke() for _ in range(3)]
    state["whole"] = ws  # kept for the next scenarios
    res = yr.get([w.checks.invoke() for w in ws], timeout=60)
    assert [(r, n) for r, n, _ in res] == [(0, 3), (1, 3), (2, 3)], res
    assert len({world for _, _, world in res}) == 3, res


@check
def outside_a_group():
    try:
        C.allreduce(np.ones(2))
        raise AssertionError("the driver is in no group")
    except C.NotInGroupError:
        pass
    try:
        yr.get(stateless.invoke(), timeout=30)
        raise AssertionError("a stateless function is in no group")
    except C.NotInGroupError as exc:
        assert "stateless" in str(exc)
    w0, w1, w2 = state["whole"]
    made.extend([w1, w2])
    C.create_group([w2, w0], name="pair")  # a subset, in a custom order
    got = yr.get([w2.pair.invoke(5), w0.pair.invoke(7)], timeout=30)
    assert got == [(0, 2, 12), (1, 2, 12)], got
    try:
        yr.get(w1.pair.invoke(1), timeout=30)
        raise AssertionError("w1 is not in 'pair'")
    except C.NotInGroupError as exc:
        assert "not a member" in str(exc)
    assert yr.get([w.ranks.invoke() for w in (w0, w1, w2)]) == [(0, 3), (1, 3), (2, 3)]
    C.destroy_group("pair")
    w1.terminate(is_sync=True)
    w2.terminate(is_sync=True)
    made.clear()
    assert yr.get(w0.ranks.invoke()) == (0, 1)  # the implicit group shrank to one
    assert yr.get(w0.checks.invoke())[:2] == (0, 1)  # a group of one works too


@check
def every_collective_members_sharing_ranks():
    # 5 x 250 millicores on the two free ranks: 4 members share one rank
    ws = [new(Shared) for _ in range(5)]
    res = yr.get([w.checks.invoke() for w in ws], timeout=60)
    assert [(r, n) for r, n, _ in res] == [(k, 5) for k in range(5)], res
    assert len({world for _, _, world in res}) < 5, res
    solo = new(Shared)  # a sixth member: the group grows
    res = yr.get([w.checks.invoke() for w in ws + [solo]], timeout=60)
    assert [(r, n) for r, n, _ in res] == [(k, 6) for k in range(6)], res


@check
def two_groups_at_once_sharing_ranks():
    # w0 holds one host rank; 8 members x 250 fill the other two exactly, so group A (5)
    # spans both ranks and group B (3) shares a rank with it
    made.append(state["whole"][0])
    sa, sb = new(Supervisor, 5), new(Supervisor, 3)
    ra, rb = yr.get([sa.run.invoke(30), sb.run.invoke(30)], timeout=120)
    assert [(r, n) for r, n, _, _ in ra] == [(k, 5) for k in range(5)]
    assert [(r, n) for r, n, _, _ in rb] == [(k, 3) for k in range(3)]
    ranks_a, ranks_b = {w for _, _, w, _ in ra}, {w for _, _, w, _ in rb}
    assert len(ranks_a) == 2 and ranks_a & ranks_b, (ranks_a, ranks_b)


@check
def membership_change_recarves():
    ms = [new(Member) for _ in range(3)]
    got = yr.get([m.step.invoke(10 ** k) for k, m in enumerate(ms)], timeout=60)
    assert [g[:3] for g in got] == [(0, 3, 111), (1, 3, 111), (2, 3, 111)], got
    ms[1].terminate(is_sync=True)
    got = yr.get([m.step.invoke(10 ** k) for k, m in zip((0, 2), (ms[0], ms[2]))], timeout=60)
    assert [g[:3] for g in got] == [(0, 2, 101), (1, 2, 101)], got
    ms.append(new(Member))  # added while the others hold a live epoch: they switch over
    got = yr.get([m.step.invoke(10 ** k) for k, m in zip((0, 2, 3), (ms[0], ms[2], ms[3]))], timeout=60)
    assert [g[:3] for g in got] == [(0, 3, 1101), (1, 3, 1101), (2, 3, 1101)], got
    got = yr.get([m.step.invoke(1) for m in (ms[0], ms[2], ms[3])], timeout=60)
    assert [g[:3] for g in got] == [(0, 3, 3), (1, 3, 3), (2, 3, 3)], got
    sup = new(Supervisor, 2)  # the same from a supervisor: its calls, not the scheduler's, come first
    assert [g[:2] for g in yr.get(sup.run.invoke(3), timeout=60)] == [(0, 2), (1, 2)]
    assert [g[:2] for g in yr.get(sup.grow.invoke(3), timeout=60)] == [(0, 3), (1, 3), (2, 3)]


@check
def blocked_member_gets_error_when_a_member_ends():
    for cpu in (1000, 250):  # blocked inside MPI (a rank each), and in a local round (one rank)
        ms = [new(Member.options(yr.InvokeOptions(cpu=cpu))) for _ in range(3)]
        yr.get([m.step.invoke(1) for m in ms], timeout=60)  # carved before anyone blocks
        refs = [m.blocked.invoke(1.0) for m in ms[:2]]
        time.sleep(0.5)
        assert yr.wait(refs, timeout=0.1)[0] == [], "the collective completed without its third member"
        start = time.time()
        ms[2].terminate(is_sync=True)
        outcomes = yr.get(refs, timeout=60)
        assert [o for o, _ in outcomes] == ["GroupChangedError"] * 2, outcomes
        print(f"interrupted after member ended (cpu={cpu}): {max(t for _, t in outcomes) - start:.3f} s", flush=True)
        got = yr.get([m.step.invoke(2) for m in ms[:2]], timeout=60)  # the survivors re-carve
        assert [g[:3] for g in got] == [(0, 2, 4), (1, 2, 4)], got
        for m in ms[:2]:
            m.terminate(is_sync=True)


@check
def blocked_members_released_when_supervisor_ends():
    # an ended instance's capacity comes back only once its running calls have returned, so
    # cpu_used back at the baseline proves the blocked collectives let go of their threads
    baseline = yr.resources()["total"]["cpu_used"]
    sup = new(Supervisor, 3)
    assert yr.get(sup.start_blocked.invoke(os.path.join(TMP, "released.log")), timeout=60) == 2
    time.sleep(0.5)
    assert yr.resources()["total"]["cpu_used"] == baseline + 3 * 250
    start = time.time()
    sup.terminate(is_sync=True)
    deadline = start + 60  # a hang guard, not a timing assertion
    while time.time() < deadline and yr.resources()["total"]["cpu_used"] != baseline:
        time.sleep(0.01)
    assert yr.resources()["total"]["cpu_used"] == baseline, yr.resources()["total"]
    print(f"released after supervisor ended: {time.time() - start:.3f} s", flush=True)


@check
def mismatched_arguments():
    ms = [new(Member.options(yr.InvokeOptions(cpu=1000))) for _ in range(3)]
    # first use of the signatures: the members compare them before any data moves
    got = yr.get([ms[0].mismatch.invoke(4), ms[1].mismatch.invoke(4), ms[2].mismatch.invoke(5)], timeout=60)
    assert all(g.startswith("mismatch") for g in got), got
    assert yr.get([m.mismatch.invoke(4) for m in ms], timeout=60) == ["completed"] * 3
    assert yr.get([m.mismatch.invoke(3) for m in ms], timeout=60) == ["completed"] * 3
    # both signatures are known now: the mismatch shows as a stall, and the scheduler names it
    got = yr.get([ms[0].mismatch.invoke(4), ms[1].mismatch.invoke(3), ms[2].mismatch.invoke(4)], timeout=60)
    assert all(g.startswith("mismatch") for g in got), got
    assert any("float64[4]" in g and "float64[3]" in g for g in got), got
    got = yr.get([m.mismatch.invoke(4, d) for m, d in zip(ms, ("float64", "float32", "float64"))], timeout=60)
    assert all(g.startswith("mismatch") for g in got), got
    assert yr.get([m.mismatch.invoke(4) for m in ms], timeout=60) == ["completed"] * 3  # usable again
    for m in ms:
        m.terminate(is_sync=True)
    # members sharing a rank compare locally
    ms = [new(Member) for _ in range(2)]
    got = yr.get([ms[0].mismatch.invoke(2), ms[1].mismatch.invoke((2, 1))], timeout=60)
    assert all(g.startswith("mismatch") for g in got), got
    assert yr.get([m.mismatch.invoke(2) for m in ms], timeout=60) == ["completed"] * 2


@yr.instance(invoke_options=yr.InvokeOptions(cpu=1000))
class Stepper:
    def elastic(self):
        C.set_fail_fast(False)

    def step(self, fail_rank=-1, delay=0.0, enter_after=0.0, catch=False):
        """One training step; member `fail_rank` raises after `delay` s instead of joining the
        allreduce; the others enter it after `enter_after` s."""
        if C.rank() == fail_rank:
            time.sleep(delay)
            raise RuntimeError(f"mat1 and mat2 shapes cannot be multiplied (3x4 and 5x6) at {time.time()!r}")
        time.sleep(enter_after)
        try:
            return float(C.allreduce(np.ones(4))[0])
        except C.GroupFailedError as exc:
            if not catch:
                raise
            return ["released", time.time(), str(exc)]


@yr.instance(invoke_options=yr.InvokeOptions(cpu=0))
class StepSupervisor:
    def __init__(self):
        self.workers = [Stepper.invoke() for _ in range(3)]

    def step(self, *args):
        """The plain pattern: the first failure (the root cause) is what get raises."""
        return yr.get([w.step.invoke(*args) for w in self.workers], timeout=20)

    def outcomes(self, fail_rank, delay, enter_after, catch=True):
        refs = [w.step.invoke(fail_rank, delay, enter_after, catch) for w in self.workers]
        out = []
        for ref in refs:
            try:
                out.append(yr.get(ref, timeout=20))
            except RuntimeError as exc:
                out.append(["raised", float(str(exc).split(" at ")[1].split("\n")[0]), str(exc)])
        return out

    def elastic(self):
        yr.get([w.elastic.invoke() for w in self.workers])
        refs = [w.step.invoke(2, 0.0, 0.0) for w in self.workers]
        first = [refs[2]]
        try:
            yr.get(first, timeout=20)
        except RuntimeError:
            pass
        time.sleep(0.5)
        waiting = yr.wait(refs[:2], wait_num=2, timeout=0.01)[1]
        again = self.workers[2].step.invoke()  # the owner re-runs the failed member's step
        return len(waiting), yr.get(refs[:2] + [again], timeout=20)


def _released_within(out, fail_rank=2):
    t_fail = out[fail_rank][1]
    for i, o in enumerate(out):
        if i == fail_rank:
            assert o[0] == "raised" and "mat1 and mat2" in o[2], o
            continue
        assert o[0] == "released", out
        assert "Stepper instance" in o[2] and "rank" in o[2] and "RuntimeError: mat1 and mat2" in o[2], o[2]
        assert o[1] - t_fail < 1.0, f"released {o[1] - t_fail:.3f} s after the failure"
    return max(o[1] for o in out) - t_fail


@check
def a_member_exception_fails_its_group_fast():
    sup = new(StepSupervisor)
    assert yr.get(sup.step.invoke(), timeout=60) == [3.0] * 3
    # the others wait inside the allreduce when member 2 raises
    start = time.monotonic()
    try:
        yr.get(sup.step.invoke(2, 0.3), timeout=60)
        raise AssertionError("no error")
    except RuntimeError as exc:
        assert "mat1 and mat2 shapes cannot be multiplied" in str(exc), str(exc)
        assert not isinstance(exc, C.CollectiveError), exc
    assert time.monotonic() - start < 5, time.monotonic() - start
    inside = _released_within(yr.get(sup.outcomes.invoke(2, 0.3, 0.0), timeout=60))
    # the others enter the allreduce after member 2 raised, in the call that was running
    later = _released_within(yr.get(sup.outcomes.invoke(2, 0.0, 0.5), timeout=60))
    assert yr.get(sup.step.invoke(), timeout=60) == [3.0] * 3, "the group re-forms for the next step"
    # member 2 raises before the group was ever carved (the others wait to join)
    sup.terminate(is_sync=True)
    fresh_sup = new(StepSupervisor)
    first = _released_within(yr.get(fresh_sup.outcomes.invoke(2, 0.3, 0.0), timeout=60))
    assert yr.get(fresh_sup.step.invoke(), timeout=60) == [3.0] * 3
    print(f"INFO fail-fast release after the failure: inside {inside:.3f} s, entering later {later:.3f} s, "
          f"before the first carve {first:.3f} s", flush=True)


@check
def an_elastic_group_waits_for_the_failed_member():
    sup = new(StepSupervisor)
    waiting, got = yr.get(sup.elastic.invoke(), timeout=60)
    assert waiting == 2 and got == [3.0] * 3, (waiting, got)


if __name__ == "__main__":
    checklib.main()
