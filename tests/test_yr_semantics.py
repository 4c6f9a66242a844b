"""yr's semantics where yrmpi used to differ (the issue's reproductions; those that need real
processes are in tests/test_yr_conformance.py), on the loopback world: the public yr API only."""
# ruff: noqa: F811  (`world` is a fixture imported from yr_world)


from __future__ import annotations

import threading

import pytest
from yr_world import Box, boom, fan_out, leaf, not_a_sequence, three_values, world  # noqa: F401

import yrmpi as yr


@yr.invoke
def count_items(items):
    return len(items)


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


@pytest.mark.parametrize("limit", ["-1", "two", "1001", 2])
def test_a_bad_async_limit_is_refused_naming_the_key(limit):
    with pytest.raises(yr.YRValueError, match=r"custom_extensions\['async_limit'\] must be a whole number 0..1000"):
        yr.InvokeOptions(custom_extensions={"async_limit": limit}).validated()


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
