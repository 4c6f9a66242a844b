"""A driver script that exercises the yr API on real ranks; prints one JSON line per check.

tests/test_api.py runs it once (one MPI launch) and turns each line into a test result.
"""

import sys
import threading
import time

import numpy as np
from checklib import check, main
from mpi4py import MPI

import yrmpi as yr


@yr.invoke
def add(a, b):
    return a + b


@yr.invoke(return_nums=2)
def divmod_remote(a, b):
    return divmod(a, b)


@yr.invoke(return_nums=0)
def nothing():
    return 123


@yr.invoke
def fail_value(msg):
    raise ValueError(msg)


@yr.invoke
def slow(seconds):
    time.sleep(seconds)
    return seconds


@yr.instance
class Counter:
    def __init__(self, start=0):
        self.n = start
        self.log = []

    def incr(self, by=1):
        self.n += by
        self.log.append(by)
        return self.n

    def get_log(self):
        return self.log

    @yr.method(return_nums=3)
    def three(self):
        return 1, 2, 3

    def boom(self):
        raise KeyError("missing-key")

    def where(self):
        return MPI.COMM_WORLD.Get_rank()

    def print_line(self, text):
        print(text)
        return True

    def quit(self):
        yr.exit()

    def sys_exit(self, code):
        sys.exit(code)

    def raise_base(self):
        raise GeneratorExit("not an Exception")


@yr.instance
class Sleeper:
    def nap(self, seconds):
        start = time.monotonic()
        time.sleep(seconds)
        return (start, time.monotonic())


@yr.instance
class Broken:
    def __init__(self):
        raise ZeroDivisionError("ctor failed")

    def f(self):
        return 1


@yr.instance
class Node:
    """Nesting: each level creates the next, passes handles around, gets inside methods."""

    def build(self, depth):
        if depth == 0:
            return ["leaf"]
        self.child = Node.invoke()
        return [f"level{depth}"] + yr.get(self.child.build.invoke(depth - 1))

    def call_peer(self, peer):
        return yr.get(peer.incr.invoke(10))

    def sum_refs(self, a, b):
        return a + b


@yr.instance
class Pinger:
    """Uses COMM_WORLD directly inside an instance, as users' own MPI code does."""

    def exchange(self, peer_rank, value):
        comm = MPI.COMM_WORLD
        req = comm.isend(value, dest=peer_rank, tag=77)
        got = comm.recv(source=peer_rank, tag=77)
        req.wait()
        return got

    def rank(self):
        return MPI.COMM_WORLD.Get_rank()


one_cpu = yr.InvokeOptions(cpu=1000)


@check
def stateless_calls():
    assert yr.get(add.invoke(2, 3)) == 5
    q, r = divmod_remote.invoke(17, 5)
    assert yr.get([q, r]) == [3, 2]
    assert nothing.invoke() is None
    assert yr.get([add.invoke(i, i) for i in range(20)]) == [2 * i for i in range(20)]


@check
def remote_exception_is_original_class():
    try:
        yr.get(fail_value.invoke("bad-input"))
    except ValueError as exc:
        assert isinstance(exc, yr.YRInvokeError), type(exc)
        text = str(exc)
        assert "bad-input" in text and "fail_value" in text and "rank" in text, text
        assert exc.code == 2002
    else:
        raise AssertionError("no error raised")


@check
def get_timeouts_and_bad_timeouts():
    ref = slow.invoke(1.5)
    try:
        yr.get(ref, timeout=0.2)
        raise AssertionError("no timeout")
    except yr.YRTimeoutError as exc:
        assert isinstance(exc, TimeoutError)
    for bad in (0, -5):
        try:
            yr.get(ref, timeout=bad)
            raise AssertionError("bad timeout accepted")
        except ValueError:
            pass
    assert yr.get(ref, timeout=-1) == 1.5
    try:
        yr.get("not a ref")
        raise AssertionError("foreign object accepted")
    except TypeError:
        pass


@check
def wait_semantics():
    refs = [slow.invoke(0.05), fail_value.invoke("x"), slow.invoke(2)]
    ready, unready = yr.wait(refs, wait_num=2, timeout=10)
    assert len(ready) >= 2 and refs[2] in unready, (ready, unready)
    try:
        yr.wait([refs[0], refs[0]])
        raise AssertionError("duplicates accepted")
    except ValueError:
        pass
    ready, unready = yr.wait(refs, wait_num=3)
    assert len(ready) == 3 and not unready
    ready, unready = yr.wait(refs)  # as in yr: wait_num defaults to 1, and at most wait_num are ready
    assert len(ready) == 1 and len(unready) == 2, (ready, unready)


@yr.instance(invoke_options=yr.InvokeOptions(cpu=1000))
class Holder:
    """Holds a value of its own and reads one another instance holds (fetched from its rank)."""

    def make(self, n, fill):
        self.kept = yr.put(np.full(n, float(fill)) if n else threading.Lock())
        return [self.kept]  # in a list: the caller gets the ref itself, not its value

    def first(self, refs):
        return float(yr.get(refs[0], timeout=60)[0])


@check
def ranks_fetching_large_values_from_each_other_do_not_deadlock():
    """Each answers the other's fetch with a 32 MB value while fetching from it; the answer
    blocks its sender until received, so it must not block the rank's polling."""
    a, b = Holder.invoke(), Holder.invoke()
    for i in range(3):
        ra, rb = yr.get(a.make.invoke(4_000_000, i)), yr.get(b.make.invoke(4_000_000, i + 100))
        assert yr.get([a.first.invoke(rb), b.first.invoke(ra)], timeout=60) == [i + 100.0, float(i)]
    unpicklable = yr.get(a.make.invoke(0, 0))
    try:
        yr.get(b.first.invoke(unpicklable), timeout=30)
        raise AssertionError("an unpicklable value was fetched")
    except yr.YRError as exc:
        assert "cannot be sent" in str(exc), str(exc)
    a.terminate(is_sync=True)
    b.terminate(is_sync=True)


@check
def put_and_refs_as_arguments():
    ref = yr.put(np.arange(10))
    assert int(yr.get(add.invoke(ref, 1)).sum()) == 55
    for bad, exc_type in ((None, ValueError), (ref, TypeError)):
        try:
            yr.put(bad)
            raise AssertionError("bad put accepted")
        except exc_type:
            pass
    chained = add.invoke(add.invoke(1, 2), add.invoke(3, 4))
    assert yr.get(chained) == 10


@check
def instances_methods_and_order():
    c = Counter.options(one_cpu).invoke(100)
    refs = [c.incr.invoke(i) for i in range(50)]
    assert yr.get(refs)[-1] == 100 + sum(range(50))
    assert yr.get(c.get_log.invoke()) == list(range(50)), "calls must run in submission order"
    assert yr.get(c.three.invoke()) == [1, 2, 3]
    try:
        yr.get(c.boom.invoke())
        raise AssertionError("no error")
    except KeyError:
        pass
    assert yr.get(c.incr.invoke()) == 100 + sum(range(50)) + 1, "instance survives a user exception"
    try:
        c.no_such_method.invoke()
        raise AssertionError("missing method accepted")
    except AttributeError as exc:
        assert "incr" in str(exc)
    try:
        c.incr.invoke(threading.Lock())  # locks cannot be pickled
        raise AssertionError("unpicklable argument accepted")
    except TypeError as exc:
        assert "pickle" in str(exc)
    c.terminate(is_sync=True)
    try:
        c.incr.invoke()
        raise AssertionError("terminated handle accepted a call")
    except RuntimeError as exc:
        assert "terminated" in str(exc)


@check
def constructor_failure_reaches_caller():
    b = Broken.invoke()
    try:
        yr.get(b.f.invoke())
        raise AssertionError("no error")
    except ZeroDivisionError as exc:
        assert "ctor failed" in str(exc)


@check
def concurrency_limits():
    serial = Sleeper.options(yr.InvokeOptions(cpu=1000, concurrency=1)).invoke()
    spans = yr.get([serial.nap.invoke(0.2) for _ in range(3)])
    assert all(spans[i][1] <= spans[i + 1][0] + 1e-3 for i in range(2)), spans
    parallel = Sleeper.options(yr.InvokeOptions(cpu=1000, concurrency=3)).invoke()
    spans = yr.get([parallel.nap.invoke(0.5) for _ in range(3)])
    latest_start = max(s for s, _ in spans)
    earliest_end = min(e for _, e in spans)
    assert latest_start < earliest_end, f"calls did not overlap: {spans}"
    serial.terminate()
    parallel.terminate()


@check
def nesting_handles_and_refs():
    root = Node.invoke()
    assert yr.get(root.build.invoke(3)) == ["level3", "level2", "level1", "leaf"]
    counter = Counter.invoke(0)
    other = Node.invoke()
    assert yr.get(other.call_peer.invoke(counter)) == 10, "a handle passed to an instance works there"
    assert yr.get(other.sum_refs.invoke(add.invoke(1, 1), yr.put(5))) == 7


@check
def named_instances():
    opts = yr.InvokeOptions(name="the-counter", namespace="ns1")
    a = Counter.options(opts).invoke(7)
    yr.get(a.incr.invoke())
    b = yr.get_instance("the-counter", namespace="ns1")
    assert yr.get(b.incr.invoke()) == 9
    dup = Counter.options(yr.InvokeOptions(name="the-counter", namespace="ns1")).invoke()
    assert yr.get(dup.incr.invoke()) == 10, "as in yr, a live instance's name gives that instance"
    shared = Counter.options(yr.InvokeOptions(name="the-counter", namespace="ns1", get_if_exists=True)).invoke()
    assert yr.get(shared.incr.invoke()) == 11
    try:
        yr.get_instance("nobody", timeout=1)
        raise AssertionError("missing name found")
    except (RuntimeError, TimeoutError):
        pass
    yr.kill_instance(a.instance_id)
    try:
        yr.get(b.incr.invoke(), timeout=30)
        raise AssertionError("killed instance answered")
    except yr.YRError:
        pass


@check
def options_validated_at_call_site():
    for bad in (dict(cpu=-1), dict(concurrency=0), dict(concurrency=1001), dict(memory=-5)):
        try:
            Counter.options(yr.InvokeOptions(**bad))
            raise AssertionError(f"{bad} accepted")
        except ValueError as exc:
            assert list(bad)[0] in str(exc)
    try:
        yr.InvokeOptions.build(cpus=1)
        raise AssertionError("unknown option accepted")
    except TypeError as exc:
        assert "did you mean 'cpu'" in str(exc)
    try:
        Counter.options(yr.InvokeOptions(cpu=64000)).invoke()
        raise AssertionError("oversized request accepted")
    except yr.YRError as exc:
        assert exc.code == 1002 and "64000" in str(exc) and "1000" in str(exc), str(exc)


@check
def resources_accounting():
    total = yr.resources()["total"]
    assert total["cpu_total"] == 1000 * (MPI.COMM_WORLD.Get_size() - 1)
    c = Counter.options(yr.InvokeOptions(cpu=700, memory=100)).invoke()
    rank = yr.get(c.where.invoke())
    row = next(r for r in yr.resources()["ranks"] if r["rank"] == rank)
    assert row["cpu_used"] >= 700 and any(name.startswith("Counter") for name in row["instances"]), row
    c.terminate(is_sync=True)
    after = next(r for r in yr.resources()["ranks"] if r["rank"] == rank)
    assert after["cpu_used"] == row["cpu_used"] - 700, (row, after)


@check
def small_instances_share_a_rank():
    small = yr.InvokeOptions(cpu=100)
    many = [Counter.options(small).invoke() for _ in range(5)]
    ranks = yr.get([c.where.invoke() for c in many])
    assert len(set(ranks)) < len(ranks), f"cpu=100 instances should share ranks (best fit), got {ranks}"
    for c in many:
        c.terminate()


@check
def user_mpi_on_comm_world_does_not_collide():
    a, b = Pinger.options(one_cpu).invoke(), Pinger.options(one_cpu).invoke()
    ra, rb = yr.get([a.rank.invoke(), b.rank.invoke()])
    assert ra != rb
    got = yr.get([a.exchange.invoke(rb, "from-a"), b.exchange.invoke(ra, "from-b")])
    assert got == ["from-b", "from-a"]
    a.terminate()
    b.terminate()


@check
def exit_inside_instance():
    c = Counter.invoke()
    try:
        yr.get(c.quit.invoke())
        raise AssertionError("no error after yr.exit()")
    except yr.YRError as exc:
        assert exc.code == 1007
    try:
        yr.exit()
        raise AssertionError("yr.exit() outside an instance accepted")
    except RuntimeError:
        pass


@check
def sys_exit_in_a_call_ends_the_instance_not_the_rank():
    """As in Ray: sys.exit() in a method ends the instance (the rank hosts others, and its
    serve thread lives on); any other BaseException is just the call's error."""
    c = Counter.invoke()
    try:
        yr.get(c.raise_base.invoke(), timeout=30)
        raise AssertionError("no error from a BaseException")
    except yr.YRInvokeError as exc:
        assert "GeneratorExit" in str(exc), str(exc)
    assert yr.get(c.incr.invoke(), timeout=30) == 1, "the instance goes on after a BaseException"
    for _ in range(2):
        try:
            yr.get(c.sys_exit.invoke(3), timeout=30)
            raise AssertionError("no error after sys.exit()")
        except yr.YRError as exc:
            assert exc.code == 1007 and "sys.exit(3)" in str(exc), str(exc)
    fresh = Counter.invoke(5)
    assert yr.get(fresh.incr.invoke(), timeout=30) == 6
    fresh.terminate(is_sync=True)


@check
def output_is_prefixed():
    c = Counter.invoke()
    yr.get(c.print_line.invoke("hello-from-instance"))
    c.terminate()


@check
def creation_waits_for_room_then_times_out():
    hosts = MPI.COMM_WORLD.Get_size() - 1
    hogs = [Counter.options(one_cpu).invoke() for _ in range(hosts)]
    yr.get([h.incr.invoke() for h in hogs])
    waiting = Counter.options(yr.InvokeOptions(cpu=1000, schedule_timeout_ms=20000)).invoke()
    late = Counter.options(yr.InvokeOptions(cpu=1000, schedule_timeout_ms=300)).invoke()
    try:
        yr.get(late.incr.invoke(), timeout=30)
        raise AssertionError("no room, yet created")
    except yr.YRError as exc:
        assert exc.code == 1002 and "schedule_timeout_ms" in str(exc), str(exc)
    hogs[0].terminate()
    assert yr.get(waiting.incr.invoke(), timeout=30) == 1, "a waiting creation gets the room that frees up"
    for h in hogs[1:] + [waiting]:
        h.terminate(is_sync=True)


@check
def cancel_a_call_that_has_not_started():
    hosts = MPI.COMM_WORLD.Get_size() - 1
    hogs = [Counter.options(one_cpu).invoke() for _ in range(hosts)]
    yr.get([h.incr.invoke() for h in hogs])
    queued = slow.options(yr.InvokeOptions(cpu=1000)).invoke(0.1)  # waits for room
    yr.cancel(queued)
    try:
        yr.get(queued, timeout=10)
        raise AssertionError("cancelled call returned")
    except yr.CancelError:
        pass
    for h in hogs:
        h.terminate(is_sync=True)


@check
def ref_callbacks_futures_and_partial_get():
    ref = add.invoke(20, 22)
    seen = []
    ref.on_complete(lambda err: seen.append(err))
    assert ref.as_future().result(timeout=30) == 42
    assert ref.done() and ref.wait(1)
    deadline = time.monotonic() + 10
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen == [None], seen
    fast, sleepy = add.invoke(1, 1), slow.invoke(3)
    assert yr.get([fast, sleepy], timeout=1, allow_partial=True) == [2, None]  # positions kept, as in yr


@check
def init_twice_is_an_error():
    try:
        yr.init()
        raise AssertionError("second init accepted")
    except RuntimeError:
        pass


if __name__ == "__main__":
    main()
