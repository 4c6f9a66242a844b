"""Tests for yrmpi.sweep.plan: simulated placement arithmetic and the printable plan."""

from __future__ import annotations

import pytest

from yrmpi.scheduling.placement import Demand, Placement, RankCapacity
from yrmpi.sweep.config import SweepConfigError, expand, load_dict
from yrmpi.sweep.plan import (
    experiment_demands,
    format_plan,
    plan_capacity,
    ranks_from_usage,
)


def config(workers: int = 3, sup: dict | None = None, wrk: dict | None = None, **extra):
    doc = {
        "name": "plan", "entry": "m:C", "run": "r", "workers": workers,
        "resources": {"supervisor": sup or {"cpu": 1000}, "worker": wrk or {"cpu": 1000}},
        "params": {"lr": [0.1, 0.01, 0.001], "batch": [32, 64, 128, 256], "epochs": 5},
        "seeds": [0, 1],
        **extra,
    }
    return load_dict(doc, source="plan.yaml", check_entry=False)


def ranks(n: int = 32, cpu: int = 1000, memory: int = 4000, per_node: int = 8,
          custom: dict | None = None) -> list[RankCapacity]:
    return [RankCapacity(i + 1, f"node{i // per_node}", cpu, memory, dict(custom or {}))
            for i in range(n)]


def test_textbook_case_eight_at_once_three_waves() -> None:
    cfg = config()
    plan = plan_capacity(cfg, ranks(), 24)
    assert (plan.fit, plan.concurrency, plan.waves, plan.experiments) == (8, 8, 3, 24)
    assert plan.summary.startswith("32 host CPUs (32 ranks x 1000 millicores), 128000 MB memory; "
                                   "each experiment needs 1 x 1000 + 3 x 1000 = 4000 millicores")
    assert plan.summary.endswith("-> 8 at once; 24 experiments -> 3 waves")
    assert plan.supervisor == Demand(cpu=1000, memory=500)
    assert plan.worker == Demand(cpu=1000, memory=500) and plan.workers == 3


def test_small_supervisors_pack_so_more_fit() -> None:
    plan = plan_capacity(config(sup={"cpu": 100}), ranks(), 24)
    # 10 experiments: 30 workers on 30 ranks, 10 supervisors share the last 2 ranks.
    assert plan.fit == 10 and plan.waves == 3
    assert "1 x 100 + 3 x 1000 = 3100 millicores" in plan.summary
    assert "-> 10 at once" in plan.summary


def test_rank_boundaries_are_simulated_not_divided() -> None:
    plan = plan_capacity(config(sup={"cpu": 600}, wrk={"cpu": 600}), ranks(), 24)
    assert plan.fit == 8  # one 600-millicore instance per 1000-millicore rank
    assert "(dividing totals would give 13; rank boundaries leave the rest unusable)" \
        in plan.summary


def test_max_concurrent_caps() -> None:
    plan = plan_capacity(config(max_concurrent=4), ranks(), 24)
    assert (plan.fit, plan.concurrency, plan.waves) == (8, 4, 6)
    assert "-> 8 at once, capped at 4 by max_concurrent; 24 experiments -> 6 waves" \
        in plan.summary


def test_fewer_experiments_than_room() -> None:
    plan = plan_capacity(config(), ranks(), 5)
    assert (plan.fit, plan.concurrency, plan.waves) == (5, 5, 1)
    assert "-> all 5 fit at once; 5 experiments -> 1 wave" in plan.summary


def test_memory_can_be_the_limit() -> None:
    cfg = config(sup={"cpu": 100, "memory": 100}, wrk={"cpu": 100, "memory": 3000})
    plan = plan_capacity(cfg, ranks(memory=4000), 24)
    assert plan.fit == 10  # one worker per rank by memory; 2 ranks left hold the supervisors
    assert "1 x 100 + 3 x 3000 = 9100 MB" in plan.summary


def test_custom_resources_limit_concurrency() -> None:
    cfg = config(workers=1, sup={"cpu": 100}, wrk={"cpu": 1000, "gpu": 1})
    pool = ranks(8, custom={"gpu": 1})[:4] + ranks(8)[4:]
    plan = plan_capacity(cfg, pool, 10)
    # Placement best-fits the first supervisor onto a GPU rank (lowest rank on a tie), which
    # leaves that rank too little cpu for a GPU worker: 3 fit, not the 4 GPUs / 1.  The plan
    # shows what the runtime will really do, and says why.
    assert plan.fit == 3 and plan.waves == 4
    assert "(dividing totals would give 4;" in plan.summary


def test_workers_zero_ignores_worker_demand() -> None:
    cfg = config(workers=0, sup={"cpu": 250}, wrk={"cpu": 99999})
    plan = plan_capacity(cfg, ranks(2), 24)
    assert plan.fit == 8 and "each experiment needs 1 x 250 = 250 millicores" in plan.summary


def test_instance_larger_than_any_rank_is_a_config_error() -> None:
    with pytest.raises(SweepConfigError) as info:
        plan_capacity(config(wrk={"cpu": 3000}), ranks(), 24)
    msg = str(info.value)
    assert msg.startswith("plan.yaml: resources.worker: found a worker that fits no rank (asks "
                          "cpu=3000 millicores but the largest rank has 1000")
    assert msg.endswith("expected a demand some rank can hold") and "\n" not in msg
    with pytest.raises(SweepConfigError, match=r"resources.supervisor: .*asks custom resource "
                                               r"'gpu'=1 but no rank declares it"):
        plan_capacity(config(sup={"gpu": 1}), ranks(), 24)


def test_experiment_that_never_fits_as_a_whole() -> None:
    with pytest.raises(SweepConfigError) as info:
        plan_capacity(config(workers=40), ranks(), 24)
    msg = str(info.value)
    assert msg.startswith("plan.yaml: resources: found an experiment (1 supervisor + 40 workers) "
                          "that cannot be placed all at once on 32 host ranks")
    assert "1 x 1000 + 40 x 1000 = 41000 millicores" in msg


def test_heterogeneous_ranks_text() -> None:
    pool = ranks(16) + [RankCapacity(100 + i, "big", 2000, 8000, {}) for i in range(8)]
    plan = plan_capacity(config(), pool, 24)
    assert plan.summary.startswith("32 host CPUs (16 ranks x 1000 + 8 ranks x 2000 millicores)")
    assert plan.fit == 8


def test_spread_policy_is_accepted() -> None:
    assert plan_capacity(config(), ranks(), 24, policy="spread").fit == 8


def test_demands_and_usage_conversion() -> None:
    sup, wrk = experiment_demands(config(sup={"cpu": 100, "gpu": 0.5}))
    assert sup == Demand(cpu=100, memory=500, custom={"gpu": 0.5})
    assert wrk == Demand(cpu=1000, memory=500)
    pool = ranks(4, custom={"gpu": 2})
    p = Placement(pool)
    p.remove_rank(2)
    back = ranks_from_usage(p.usage())
    assert [r.rank for r in back] == [1, 3, 4]
    assert back[0] == RankCapacity(1, "node0", 1000, 4000, {"gpu": 2.0})


def test_format_plan_lists_experiments_and_arithmetic() -> None:
    cfg = config()
    exps = expand(cfg)
    plan = plan_capacity(cfg, ranks(), len(exps))
    text = format_plan(cfg, exps, plan)
    lines = text.splitlines()
    assert lines[0] == "sweep plan: 24 experiments (3 lr x 4 batch x 2 seeds)"
    assert lines[1] == plan.summary
    assert lines[3].split() == ["wave", "#", "id", "seed", "lr", "batch"]
    rows = [line.split() for line in lines[4:28]]
    assert [r[2] for r in rows] == [e.id for e in exps]
    assert [r[0] for r in rows] == ["1"] * 8 + ["2"] * 8 + ["3"] * 8
    assert lines[-1] == "same in every experiment: epochs=5"


def test_format_plan_for_a_resumed_subset_numbers_waves_from_one() -> None:
    cfg = config()
    exps = expand(cfg)[20:]
    plan = plan_capacity(cfg, ranks(), len(exps))
    rows = format_plan(cfg, exps, plan).splitlines()[4:]
    assert [r.split()[0] for r in rows[:4]] == ["1"] * 4
