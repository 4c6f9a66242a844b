"""Affinity: yr.Affinity conditions on rank labels and on the labels of instances already
placed, on the loopback world: the public yr API only."""
# ruff: noqa: F811  (`world` is a fixture imported from yr_world)


from __future__ import annotations

import pytest
from yr_world import Box, _rank_of, world  # noqa: F401

import yrmpi as yr


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
