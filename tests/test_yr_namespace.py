"""The SDK's yr namespace: every name imports; handles, resources(), Config and decorators in
the SDK's shape, on the loopback world: the public yr API only."""
# ruff: noqa: F811  (`world` is a fixture imported from yr_world)


from __future__ import annotations

import pytest
from yr_world import Box, world  # noqa: F401

import yrmpi as yr


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
