"""yr programs as openYuanrong's documentation writes them, run unchanged under `yrmpi run`
(`import yr` resolves to yrmpi): one check per semantic or feature the SDK documents.

tests/test_yr_conformance.py runs it once; each check prints one `CHECK {json}` line.
"""

import asyncio
import os
import threading
import time

import checklib
import yr
from yr.config import Config
from yr.exception import CancelError, YRInvokeError
from yr.object_ref import ObjectRef

CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


@yr.invoke
def leaf(i):
    return i * 10


@yr.invoke
def fan_out(n):
    return [leaf.invoke(i) for i in range(n)]


@yr.invoke
def nap(seconds):
    time.sleep(seconds)
    return seconds


@yr.invoke
def fails():
    raise ValueError("boom")


@yr.invoke
def first_of(items):
    return "ran"


@yr.invoke(return_nums=2)
def three():
    return 1, 2, 3


@yr.invoke
def env_of(name):
    return os.environ.get(name)


@yr.invoke
def value_of_id(hex_id):
    return yr.get(yr.ObjectRef(hex_id))


@yr.invoke
def env_plain(name):
    return os.environ.get(name)


@yr.instance
class Counter:
    def __init__(self, start=0, delay=0.0):
        time.sleep(delay)
        self.cnt = start

    def add(self):
        self.cnt += 1
        return self.cnt

    def get(self):
        return self.cnt

    def save(self, timeout=30):
        yr.save_state(timeout)

    def load(self, timeout=30):
        yr.load_state(timeout)

    def env(self, name):
        return os.environ.get(name)

    def kv_wait(self, key):
        return yr.kv_read(key, timeout=30)

    def kv_put(self, key, value):
        yr.kv_write(key, value)


@yr.instance
class Locked:
    guard = threading.Lock()  # a class attribute that cannot be pickled

    def ping(self):
        return 1


@yr.instance
class AsyncWorker:
    async def work(self, x):
        await asyncio.sleep(0.2)
        return x * 2

    async def await_ref(self, ref_list):
        value = await ref_list[0]
        return value + 1


@yr.instance
class Turnstile:
    """Counts its `async def` calls inside at once."""

    def __init__(self):
        self.inside = self.most_inside = 0

    async def hold(self, seconds):
        self.inside += 1
        self.most_inside = max(self.most_inside, self.inside)
        await asyncio.sleep(seconds)
        self.inside -= 1

    def most(self):
        return self.most_inside


@yr.instance
class Member:
    def __init__(self):
        self.born_as = yr.fcc.get_function_group_context().rank_id

    def reduce(self, x):
        import numpy as np

        ctx = yr.fcc.get_function_group_context()
        total = yr.collective.allreduce(np.array([float(x)]))
        assert ctx.rank_id == self.born_as
        return ctx.rank_id, ctx.world_size, float(total[0])


@check
def function_group_with_collectives():
    opts = yr.FunctionGroupOptions(cpu=300, memory=128, scheduling_affinity_each_bundle_size=2)
    handler = yr.fcc.create_function_group(Member, args=(), group_size=4, options=opts)  # two bundles of 2
    assert yr.get(handler.reduce.invoke(2), timeout=60) == [(r, 4, 8.0) for r in range(4)]
    handler.terminate()


@check
def group_and_resource_group():
    rg = yr.create_resource_group([{"CPU": 1000, "Memory": 512}], "exp-rg")
    rg.wait(30)
    opt = yr.InvokeOptions(cpu=300, memory=100)
    opt.resource_group_options.resource_group_name = "exp-rg"
    inside = [Counter.options(opt).invoke(i) for i in range(3)]
    assert yr.get([c.get.invoke() for c in inside]) == [0, 1, 2]
    yr.remove_resource_group("exp-rg")
    g_opts = yr.InvokeOptions()
    g_opts.group_name = "g-exp"
    a, b = Counter.options(g_opts).invoke(1), Counter.options(g_opts).invoke(2)
    g = yr.Group("g-exp", yr.GroupOptions())
    g.invoke()
    g.wait()
    assert yr.get([a.add.invoke(), b.add.invoke()]) == [2, 3]
    g.terminate()


@check
def affinity_on_hostname():
    import socket

    op = yr.LabelOperator(yr.OperatorType.LABEL_IN, "hostname", [socket.gethostname()])
    opt = yr.InvokeOptions(schedule_affinities=[yr.Affinity(yr.AffinityKind.RESOURCE, yr.AffinityType.REQUIRED, [op])])
    assert yr.get(Counter.options(opt).invoke(3).get.invoke()) == 3
    never = yr.LabelOperator(yr.OperatorType.LABEL_IN, "hostname", ["no-such-host"])
    opt.schedule_affinities = [yr.Affinity(yr.AffinityKind.RESOURCE, yr.AffinityType.REQUIRED, [never])]
    try:
        yr.get(Counter.options(opt).invoke().get.invoke(), timeout=10)
        raise AssertionError("placed against a required affinity")
    except RuntimeError as exc:
        assert "no rank has labels" in str(exc)


@check
def sdk_import_paths():
    assert yr.Config is Config and yr.ObjectRef is ObjectRef
    from yr import ExistenceOpt, GetParam, GetParams, InstanceProxy, SetParam  # noqa: F401


@check
def returned_refs_outlive_the_function():
    refs = yr.get(fan_out.invoke(8))
    assert yr.get(refs) == [i * 10 for i in range(8)]


@check
def wait_as_completed():
    refs = [nap.invoke(0.3 * (i % 3)) for i in range(9)]
    seen = []
    while refs:
        ready, refs = yr.wait(refs, wait_num=1)
        assert len(ready) == 1, ready
        seen.append(yr.get(ready[0]))
    assert len(seen) == 9 and sorted(seen) == sorted(0.3 * (i % 3) for i in range(9))


@check
def get_allow_partial_keeps_positions():
    quick, slow = leaf.invoke(0), nap.invoke(3)
    assert yr.get([quick, slow], timeout=1, allow_partial=True) == [0, None]


@check
def exceptions_are_runtime_errors_as_in_yr():
    try:
        yr.get(fails.invoke())
        raise AssertionError("no error")
    except RuntimeError as exc:
        assert isinstance(exc, YRInvokeError) and isinstance(exc, ValueError)
    try:
        yr.get(nap.invoke(5), timeout=0.5)
        raise AssertionError("no timeout")
    except RuntimeError as exc:
        assert isinstance(exc, TimeoutError) and isinstance(exc, yr.YRTimeoutError)
    assert issubclass(CancelError, RuntimeError)


@check
def named_instances():
    a = Counter.options(yr.InvokeOptions(name="counter-1")).invoke(5)
    b = Counter.options(yr.InvokeOptions(name="counter-1")).invoke(100)
    assert yr.get(b.add.invoke()) == 6 and a.instance_id == b.instance_id
    assert "counter-1" in yr.list_named_instances()
    slow = Counter.options(yr.InvokeOptions(name="slow-1")).invoke(0, 2.0)
    t0 = time.monotonic()
    try:
        yr.get_instance("slow-1", timeout=0.5)
        raise AssertionError("returned before the constructor finished")
    except TimeoutError:
        pass
    h = yr.get_instance("slow-1", timeout=30)
    assert time.monotonic() - t0 >= 1.5 and yr.get(h.get.invoke()) == 0
    try:
        yr.get_instance("nobody", timeout=1)
        raise AssertionError("found nobody")
    except RuntimeError as exc:
        assert "failed to get instance: nobody by name" in str(exc)
    slow.terminate()
    a.terminate()


@check
def wrong_result_count_is_value_error():
    try:
        yr.get(three.invoke())
        raise AssertionError("accepted")
    except ValueError:
        pass


@check
def invoke_options_by_attribute():
    opt = yr.InvokeOptions()
    opt.env_vars = {"YR_CHECK_ENV": "from-options"}
    c = Counter.options(opt).invoke()
    assert yr.get(c.env.invoke("YR_CHECK_ENV")) == "from-options"
    assert yr.get(env_of.options(opt).invoke("YR_CHECK_ENV")) == "from-options"
    iid = yr.get(c.env.invoke("INSTANCE_ID"))
    assert iid == c.instance_id, (iid, c.instance_id)
    assert os.environ.get("YR_CHECK_ENV") is None
    assert yr.get(env_plain.invoke("YR_CHECK_ENV")) is None, "env_vars leaked to a call without them"
    c.terminate()


@check
def unpicklable_class_fails_at_once():
    t0 = time.monotonic()
    try:
        Locked.invoke()
        raise AssertionError("accepted")
    except TypeError as exc:
        assert "Locked" in str(exc) and "guard" in str(exc), str(exc)
    assert time.monotonic() - t0 < 5


@check
def undeclared_resource_is_1006():
    try:
        Counter.options(yr.InvokeOptions(custom_resources={"unicorn": 1})).invoke()
        raise AssertionError("accepted")
    except yr.YRError as exc:
        assert exc.code == 1006, exc.code


@check
def failed_nested_ref_fails_the_call():
    try:
        yr.get(first_of.invoke([fails.invoke()]))
        raise AssertionError("a failed nested ref did not fail the call")
    except ValueError:
        pass


@check
def kv_store():
    yr.kv_write("kv-key", b"value1", yr.ExistenceOpt.NONE, yr.WriteMode.NONE_L2_CACHE, 0, yr.CacheType.MEMORY)
    assert yr.kv_read("kv-key") == b"value1"
    c = Counter.invoke()
    waiting = c.kv_wait.invoke("kv-later")  # blocks in the instance until the driver writes
    time.sleep(0.5)
    assert not waiting.done()
    yr.kv_set("kv-later", b"now")
    assert yr.get(waiting) == b"now"
    yr.get(c.kv_put.invoke("kv-from-instance", b"x" * 300_000))
    assert yr.kv_get("kv-from-instance") == b"x" * 300_000
    param = yr.SetParam()
    param.existence = yr.ExistenceOpt.NX
    try:
        yr.kv_set("kv-key", b"again", param)
        raise AssertionError("NX overwrote")
    except RuntimeError:
        pass
    get_param = yr.GetParam()
    get_param.offset, get_param.size = 1, 3
    params = yr.GetParams()
    params.get_params = [get_param]
    assert yr.kv_get_with_param(["kv-key"], params, 10) == [b"alu"]
    yr.kv_del(["kv-key", "kv-later"])
    try:
        yr.kv_read("kv-key", timeout=1)
        raise AssertionError("deleted key read")
    except RuntimeError:
        pass
    c.terminate()


@check
def save_and_load_state():
    counter = Counter.invoke()
    yr.get(counter.save.invoke())
    yr.get(counter.add.invoke())
    assert yr.get(counter.get.invoke()) == 1
    yr.get(counter.load.invoke())
    assert yr.get(counter.get.invoke()) == 0
    counter.terminate()


@check
def handles_refs_and_node():
    c = Counter.invoke()
    assert c.is_activate() and c.real_id == c.instance_id
    ref = fails.invoke()
    yr.wait(ref)
    assert ref.is_exception()
    value = yr.put(41)
    yr.get(first_of.invoke([value]))  # (it has left this rank: its id means something elsewhere now)
    assert yr.ObjectRef(f"{value.id:x}") is value, "ObjectRef(object_id) gives this rank's ref of that id"
    assert yr.get(value_of_id.invoke(f"{value.id:x}")) == 41
    assert not leaf.invoke(1).is_exception()
    assert isinstance(yr.get_node_ip_address(), str)
    nodes = yr.resources()
    assert {"id", "capacity", "allocatable", "status"} <= set(nodes[0]) and nodes["total"]["cpu_total"] > 0
    c.terminate(is_sync=True)
    assert not c.is_activate()


@yr.invoke
async def async_function(x):
    await asyncio.sleep(0.01)
    return x + 1


@check
def async_instances():
    w = AsyncWorker.invoke()
    t0 = time.monotonic()
    refs = [w.work.invoke(i) for i in range(5)]
    assert yr.get(refs) == [0, 2, 4, 6, 8]
    assert time.monotonic() - t0 < 0.9, "async methods did not run concurrently"
    assert yr.get(w.await_ref.invoke([leaf.invoke(4)])) == 41
    assert yr.get(async_function.invoke(1)) == 2
    free = Turnstile.invoke()
    capped = Turnstile.options(yr.InvokeOptions(custom_extensions={"async_limit": "2"})).invoke()
    yr.get([free.most.invoke(), capped.most.invoke()])  # both constructed: the calls below arrive together
    yr.get([t.hold.invoke(0.3) for t in (free, capped) for _ in range(5)], timeout=60)
    assert yr.get(capped.most.invoke()) == 2, "async_limit=2: at most 2 calls at once"
    assert yr.get(free.most.invoke()) > 2, "no async_limit: the calls interleave"


def main() -> None:
    info = yr.init(yr.Config(server_address="127.0.0.1:31222", ds_address="127.0.0.1:31501", log_level="WARNING",
                             in_cluster=True, recycle_time=2, custom_envs={"YR_CHECK_CUSTOM": "custom"}))
    results = [{"check": "init_returns_client_info", "ok": bool(info.job_id)}, *checklib.run_checks(CHECKS)]

    def custom_envs():
        assert yr.get(env_of.invoke("YR_CHECK_CUSTOM")) == "custom", "Config.custom_envs"

    def init_finalize_init():  # init -> finalize -> init in one process: a new runtime on the same MPI
        yr.init()
        assert yr.get(leaf.invoke(7)) == 70
        yr.finalize()

    results.append(checklib.outcome("config_custom_envs", custom_envs))
    yr.finalize()
    results.append(checklib.outcome("init_finalize_init", init_finalize_init))
    for result in results:
        result.setdefault("error", "")
        checklib.report(result)


if __name__ == "__main__":
    main()
