"""The yr semantics that yrmpi matches, on the loopback world (tests/loopback.py: the real roles
of N ranks in one process, fake time): each test is one of the issue's reproductions, written
against the public yr API only, and runs in milliseconds."""

from __future__ import annotations

import gc
import threading

import pytest
from loopback import LoopWorld

import yrmpi as yr
from yrmpi.core import rank as rank_mod


@pytest.fixture
def world():
    w = LoopWorld(4)
    w.driver()
    yield w
    rank_mod.install(None)
    gc.collect()
    assert not w.errors, w.errors


@yr.invoke
def leaf(i):
    return i * 10


@yr.invoke
def fan_out(n):
    return [leaf.invoke(i) for i in range(n)]


@yr.invoke
def boom():
    raise ValueError("no")


@yr.invoke(return_nums=2)
def three_values():
    return 1, 2, 3


@yr.invoke(return_nums=2)
def not_a_sequence():
    return 7


@yr.instance
class Box:
    def __init__(self, tag="box"):
        self.tag = tag
        self.items = []

    def add(self, x):
        self.items.append(x)
        return len(self.items)

    def tag_of(self):
        return self.tag

    def save(self):
        yr.save_state()

    def load(self):
        yr.load_state()

    def items_(self):
        return list(self.items)

    def first_of(self, refs):
        return yr.get(refs[0])

    def kv_put(self, key, value):
        yr.kv_write(key, value)

    def kv_get(self, key):
        return yr.kv_read(key, timeout=5)


def test_refs_returned_by_a_stateless_function_outlive_it(world):
    refs = yr.get(fan_out.invoke(4), timeout=5)
    assert yr.get(refs, timeout=5) == [0, 10, 20, 30]


def test_wait_returns_at_most_wait_num_and_defaults_to_one(world):
    refs = [leaf.invoke(i) for i in range(5)]
    yr.get(refs, timeout=5)
    ready, unready = yr.wait(refs, wait_num=1)
    assert ready == refs[:1] and unready == refs[1:]
    ready, unready = yr.wait(refs)
    assert len(ready) == 1 and len(unready) == 4
    ready, unready = yr.wait(refs, wait_num=3, timeout=10)
    assert len(ready) == 3 and len(unready) == 2
    assert yr.wait(refs, wait_num=0) == ([], refs)


def test_get_allow_partial_keeps_positions(world):
    done = yr.put(0)
    never = Box.options(yr.InvokeOptions(custom_resources={})).invoke()
    pending = never.add.invoke(1)
    world.ranks[0].caller.calls[pending.id].state.rank = None  # (noop: it is answered below)
    assert yr.get([done, pending], timeout=5, allow_partial=True)[0] == 0


def test_wrong_number_of_results_is_a_value_or_type_error(world):
    with pytest.raises(ValueError):
        yr.get(three_values.invoke()[0], timeout=5)
    with pytest.raises(TypeError):
        yr.get(not_a_sequence.invoke()[0], timeout=5)


def test_sdk_fields_set_by_attribute_are_kept_and_typos_rejected():
    opt = yr.InvokeOptions()
    opt.env_vars = {"A": "1"}
    opt.schedule_affinities = []
    assert opt.env_vars == {"A": "1"}
    with pytest.raises(TypeError, match="did you mean 'env_vars'"):
        opt.env_var = {"A": "1"}


def test_an_unpicklable_class_fails_at_once_naming_the_attribute(world):
    class WithLock:  # (a local class travels by value, as a driver script's classes do)
        lock = threading.Lock()

        def ping(self):
            return 1

    creator = yr.instance(WithLock)
    with pytest.raises(TypeError, match=r"WithLock.*lock"):
        creator.invoke()


def test_an_undeclared_custom_resource_is_code_1006(world):
    with pytest.raises(yr.YRError) as info:
        Box.options(yr.InvokeOptions(custom_resources={"gpu": 1})).invoke()
    assert info.value.code == 1006


def test_a_live_name_gives_the_live_instance_and_get_instance_waits_for_it(world):
    a = Box.options(yr.InvokeOptions(name="svc")).invoke("first")
    b = Box.options(yr.InvokeOptions(name="svc")).invoke("second")
    assert yr.get(b.tag_of.invoke(), timeout=5) == "first"
    assert yr.get_instance("svc").instance_id == a.instance_id
    with pytest.raises(RuntimeError, match="failed to get instance: nobody by name"):
        yr.get_instance("nobody")
    assert yr.list_named_instances() == ["svc"]
    Box.options(yr.InvokeOptions(name="other", namespace="ns")).invoke()
    assert yr.list_named_instances(all_namespaces=True) == ["ns-other", "svc"]


def test_kv_write_read_delete_across_ranks(world):
    world.pass_time_when_idle(0.25, 1000)  # (a read of a missing key then times out)
    yr.kv_write("k1", b"v1")
    assert yr.kv_read("k1") == b"v1"
    box = Box.invoke()
    assert yr.get(box.kv_get.invoke("k1"), timeout=5) == b"v1"
    yr.get(box.kv_put.invoke("k2", b"from-instance"), timeout=5)
    assert yr.kv_get(["k1", "k2"]) == [b"v1", b"from-instance"]
    yr.kv_del(["k1", "k2"])
    with pytest.raises(RuntimeError):
        yr.kv_read("k1", timeout=0.5)


def test_kv_existence_ttl_params_and_transactions(world):
    world.pass_time_when_idle(0.25, 1000)
    yr.kv_write("nx", b"1", yr.ExistenceOpt.NX)
    with pytest.raises(RuntimeError, match="already exists"):
        yr.kv_write("nx", b"2", yr.ExistenceOpt.NX)
    param = yr.SetParam()
    param.ttl_second = 10
    yr.kv_write_with_param("short", b"x", param)
    assert yr.kv_read("short") == b"x"
    world.advance(11)
    with pytest.raises(RuntimeError):
        yr.kv_read("short", timeout=0.5)
    yr.kv_m_write_tx(["a", "b"], [b"A", b"B"], yr.MSetParam())
    with pytest.raises(RuntimeError):
        yr.kv_m_write_tx(["b", "c"], [b"x", b"y"])
    with pytest.raises(RuntimeError):
        yr.kv_read("c", timeout=0.5)  # all or nothing
    yr.kv_write("long", b"0123456789")
    params = yr.GetParams(get_params=[yr.GetParam(offset=2, size=3)])
    assert yr.kv_get_with_param(["long"], params) == [b"234"]
    big = bytes(range(256)) * 1024  # 256 KB: out of band
    yr.kv_write("big", big)
    assert yr.kv_read("big") == big


def test_save_state_and_load_state_inside_a_method(world):
    box = Box.invoke()
    yr.get(box.add.invoke(1), timeout=5)
    yr.get(box.save.invoke(), timeout=5)
    yr.get(box.add.invoke(2), timeout=5)
    assert yr.get(box.items_.invoke(), timeout=5) == [1, 2]
    yr.get(box.load.invoke(), timeout=5)
    assert yr.get(box.items_.invoke(), timeout=5) == [1]
    with pytest.raises(RuntimeError, match="inside an instance"):
        yr.save_state()


def test_handle_real_id_and_is_activate(world):
    box = Box.invoke()
    assert box.real_id == box.instance_id
    assert box.is_activate()
    box.terminate(is_sync=True)
    assert not box.is_activate()


def test_resources_in_the_sdk_shape_and_yrmpis(world):
    res = yr.resources()
    assert isinstance(res, list) and res[0]["capacity"]["CPU"] == 3000.0
    assert set(res[0]) == {"id", "capacity", "allocatable", "status"}
    assert res["total"]["cpu_total"] == 3000


def test_config_accepts_every_sdk_field():
    conf = yr.Config(server_address="1.2.3.4:1", ds_address="x", function_id="f", log_level="INFO", log_dir="/tmp",
                     in_cluster=False, local_mode=True, recycle_time=5, custom_envs={"A": "1"}, auth_token="t",
                     enable_tls=True)
    assert "server_address" in conf.ignored_fields() and "log_level" not in conf.ignored_fields()
    assert conf.resolved().custom_envs == {"A": "1"}


def test_decorators_accept_the_sdks_other_keywords():
    @yr.invoke(initializer=None, return_nums=None)
    def f():
        return 1

    class C:
        @yr.method(concurrency_group="io", return_nums=1)
        def m(self):
            return 1

    assert isinstance(f, yr.FunctionProxy)


def _rank_of(world, handle):
    return world.scheduler.records[int(handle.instance_id, 16)].rank


def test_affinity_on_rank_labels(world):
    world.ranks[0].settings["labels"] = {"zone": "default", "3": {"zone": "a"}}  # (Config(labels=...))
    opt = yr.InvokeOptions()
    opt.schedule_affinities = [yr.Affinity(yr.AffinityKind.RESOURCE, yr.AffinityType.REQUIRED,
                                           [yr.LabelOperator(yr.OperatorType.LABEL_IN, "zone", ["a"])])]
    boxes = [Box.options(opt).invoke() for _ in range(2)]
    yr.get([b.tag_of.invoke() for b in boxes], timeout=5)
    assert [_rank_of(world, b) for b in boxes] == [3, 3]
    anti = yr.InvokeOptions(schedule_affinities=[yr.Affinity(
        yr.AffinityKind.RESOURCE, yr.AffinityType.REQUIRED_ANTI,
        [yr.LabelOperator(yr.OperatorType.LABEL_IN, "rank", ["1", "3"])])])
    away = Box.options(anti).invoke()
    yr.get(away.tag_of.invoke(), timeout=5)
    assert _rank_of(world, away) == 2
    soft = yr.InvokeOptions(schedule_affinities=[yr.Affinity(
        yr.AffinityKind.RESOURCE, yr.AffinityType.PREFERRED,
        [yr.LabelOperator(yr.OperatorType.LABEL_EXISTS, "gpu-model")])])
    anywhere = Box.options(soft).invoke()
    assert yr.get(anywhere.tag_of.invoke(), timeout=5) == "box"


def test_a_required_affinity_that_can_never_hold_fails_clearly(world):
    opt = yr.InvokeOptions(schedule_affinities=[yr.Affinity(
        yr.AffinityKind.RESOURCE, yr.AffinityType.REQUIRED,
        [yr.LabelOperator(yr.OperatorType.LABEL_IN, "zone", ["mars"])])])
    box = Box.options(opt).invoke()
    with pytest.raises(yr.ResourceError, match="no rank has labels that satisfy"):
        yr.get(box.tag_of.invoke(), timeout=5)


def test_instance_affinity_follows_labelled_instances(world):
    ps = Box.options(yr.InvokeOptions(labels=["role=ps"], cpu=100)).invoke()
    yr.get(ps.tag_of.invoke(), timeout=5)
    near = yr.InvokeOptions(cpu=100, custom_extensions={"placement": "spread"}, schedule_affinities=[yr.Affinity(
        yr.AffinityKind.INSTANCE, yr.AffinityType.REQUIRED,
        [yr.LabelOperator(yr.OperatorType.LABEL_IN, "role", ["ps"])])])
    workers = [Box.options(near).invoke() for _ in range(3)]
    yr.get([w.tag_of.invoke() for w in workers], timeout=5)
    assert {_rank_of(world, w) for w in workers} == {_rank_of(world, ps)}


def test_resource_groups_reserve_capacity_and_hold_their_instances(world):
    rg = yr.create_resource_group([{"CPU": 1000, "Memory": 500}, {"CPU": 1000, "Memory": 500}], "exp",
                                  strategy="SPREAD")
    rg.wait(10)
    assert rg.bundle_count == 2 and yr.resources()["total"]["cpu_used"] == 2000
    opt = yr.InvokeOptions(cpu=500, memory=100)
    opt.resource_group_options = yr.ResourceGroupOptions("exp", 1)
    members = [Box.options(opt).invoke() for _ in range(2)]
    yr.get([m.tag_of.invoke() for m in members], timeout=5)
    assert yr.resources()["total"]["cpu_used"] == 2000, "members use the group's reservation"
    bundle_rank = world.scheduler.rgroups["exp"][1].rank
    assert {_rank_of(world, m) for m in members} == {bundle_rank}
    too_big = Box.options(yr.InvokeOptions(memory=600, resource_group_options=yr.ResourceGroupOptions("exp"))).invoke()
    with pytest.raises(yr.YRError, match="more than any bundle"):
        yr.get(too_big.tag_of.invoke(), timeout=5)
    with pytest.raises(RuntimeError, match="does not fit"):
        yr.create_resource_group([{"CPU": 1000}] * 5, "too-big").wait()
    yr.remove_resource_group(rg)
    world.run()
    assert yr.resources()["total"]["cpu_used"] == 0
    assert not members[0].is_activate()


def test_a_group_creates_its_members_together_and_shares_their_fate(world):
    opts = yr.InvokeOptions(group_name="g1")
    a, b = Box.options(opts).invoke("a"), Box.options(opts).invoke("b")
    world.run()
    assert not world.scheduler.records, "members wait for the group's invoke"
    g = yr.Group("g1", yr.GroupOptions())
    g.invoke()
    g.wait()
    assert yr.get([a.tag_of.invoke(), b.tag_of.invoke()], timeout=5) == ["a", "b"]
    yr.get(a.add.invoke(7), timeout=5)
    g.suspend()
    assert not a.is_activate()
    g.resume()
    assert yr.get(a.items_.invoke(), timeout=5) == [7], "resumed with its attributes"
    a.terminate(is_sync=True)
    world.run()
    assert not b.is_activate(), "same_lifecycle: one member's end ends the others"


@yr.invoke
def whoami(tag):
    ctx = yr.fcc.get_function_group_context()
    return tag, ctx.rank_id, ctx.world_size


def test_function_groups_of_a_class_and_of_a_function(world):
    opts = yr.FunctionGroupOptions(cpu=200, memory=100, scheduling_affinity_each_bundle_size=2)
    handler = yr.fcc.create_function_group(Box, args=("m",), group_size=4, options=opts)
    assert yr.get(handler.tag_of.invoke(), timeout=5) == ["m"] * 4
    assert len(handler) == 4 and yr.get(handler[2].add.invoke(1), timeout=5) == 1
    handler.terminate()
    refs = yr.fcc.create_function_group(whoami, args=("f",), group_size=3, options=yr.FunctionGroupOptions(cpu=200))
    assert yr.get(refs, timeout=5) == [("f", 0, 3), ("f", 1, 3), ("f", 2, 3)]
    world.run()
    assert not world.scheduler.records, "a function's members end once they have run"
    with pytest.raises(ValueError, match="divisible"):
        yr.fcc.create_function_group(Box, args=(), group_size=3, options=opts)
    assert yr.fcc.get_function_group_context().world_size == 0


SDK_NAMESPACE = [  # the SDK's `yr.__all__`, and the names its docs import from `yr` besides
    "init", "finalize", "Config", "UserTLSConfig", "put", "get", "wait", "cancel", "invoke", "instance", "method",
    "InvokeOptions", "exit", "ProducerConfig", "SubscriptionConfig", "Element", "create_stream_producer",
    "create_stream_consumer", "delete_stream", "Context", "Function", "GetParam", "GetParams", "Affinity",
    "AffinityType", "AffinityKind", "AffinityScope", "LabelOperator", "OperatorType", "kv_read", "kv_write", "kv_set",
    "kv_get", "kv_get_with_param", "kv_del", "kv_m_write_tx", "ExistenceOpt", "WriteMode", "CacheType", "SetParam",
    "MSetParam", "CreateParam", "ConsistencyType", "save_state", "load_state", "get_instance", "is_initialized",
    "query_global_producers_num", "query_global_consumers_num", "Gauge", "Alarm", "java_instance_class",
    "go_instance_class", "create_function_group", "AlarmSeverity", "AlarmInfo", "UInt64Counter", "DoubleCounter",
    "FunctionGroupOptions", "SchedulingAffinityType", "FunctionGroupContext", "ServerInfo", "DeviceInfo",
    "get_function_group_context", "create_resource_group", "remove_resource_group", "ResourceGroup", "FunctionProxy",
    "InstanceCreator", "InstanceProxy", "MethodProxy", "FunctionGroupHandler", "FunctionGroupMethodProxy",
    "get_node_ip_address", "list_named_instances", "Group", "GroupOptions", "kv_write_with_param", "cpp_function",
    "java_function", "go_function", "cpp_instance_class", "resources", "ResourceGroupOptions", "fcc",
]


def test_every_name_of_the_sdk_namespace_imports():
    assert [name for name in SDK_NAMESPACE if not hasattr(yr, name)] == []
    with pytest.raises(RuntimeError, match="out of scope"):
        yr.create_stream_producer("s")
    yr.Gauge("g").set(1)  # metrics: accepted and ignored


def test_the_docs_table_names_every_sdk_name():
    from pathlib import Path

    table = (Path(__file__).resolve().parent.parent / "docs" / "api.md").read_text().split("## yr API -> yrmpi")[1]
    assert [name for name in SDK_NAMESPACE if f"`{name}`" not in table] == []


@yr.invoke
def count_items(items):
    return len(items)


def test_a_failed_ref_nested_in_an_argument_fails_the_call(world):
    with pytest.raises(ValueError):
        yr.get(count_items.invoke([boom.invoke()]), timeout=5)
    assert yr.get(count_items.invoke([leaf.invoke(1), {"k": leaf.invoke(2)}]), timeout=5) == 2


def test_errors_are_runtime_errors_as_in_yr(world):
    assert issubclass(yr.YRTimeoutError, RuntimeError) and issubclass(yr.YRTimeoutError, TimeoutError)
    assert issubclass(yr.CancelError, RuntimeError) and issubclass(yr.YRInvokeError, RuntimeError)
    with pytest.raises(RuntimeError) as info:
        yr.get(boom.invoke(), timeout=5)
    assert isinstance(info.value, ValueError) and isinstance(info.value, yr.YRInvokeError)
