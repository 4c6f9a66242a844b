"""Capacity planning: how many experiments of a sweep can run at once on these ranks.

Each experiment is one supervisor (``resources.supervisor``) plus ``workers`` workers
(``resources.worker``).  Dividing total capacity by per-experiment demand is wrong as soon
as demands do not tile ranks (three 100-millicore supervisors share one rank; a 600
millicore worker wastes 400 of a 1000 rank), so the plan *simulates* placement with the
runtime's own :class:`yrmpi.scheduling.placement.Placement` and counts how many whole experiments fit.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..scheduling.placement import Demand, Placement, RankCapacity
from ._text import fmt_params, fmt_value, split_params, table
from .config import Experiment, Grid, Resources, SweepConfig, SweepConfigError

#: Most instances one plan simulates (experiments x (1 + workers)); planning time is linear in it.
MAX_SIMULATED = 1_000_000

__all__ = ["MAX_SIMULATED", "CapacityPlan", "experiment_demands", "format_plan", "plan_capacity",
           "ranks_from_usage"]


@dataclass(frozen=True)
class CapacityPlan:
    """Result of :func:`plan_capacity`; ``summary`` is the arithmetic in one line."""

    experiments: int
    fit: int  # experiments that fit at once by simulated placement (searched up to experiments)
    concurrency: int  # experiments run at once: fit capped by max_concurrent and experiments
    waves: int  # ceil(experiments / concurrency)
    supervisor: Demand
    worker: Demand
    workers: int
    ranks: int
    summary: str


def _demand(res: Resources) -> Demand:
    return Demand(cpu=res.cpu, memory=res.memory, custom=dict(res.custom))


def experiment_demands(config: SweepConfig) -> tuple[Demand, Demand]:
    """(supervisor demand, worker demand) of one experiment, as the runtime will ask."""
    return _demand(config.supervisor_resources), _demand(config.worker_resources)


def ranks_from_usage(usage: Mapping[str, Any]) -> list[RankCapacity]:
    """Host-rank capacities from ``Placement.usage()`` / ``yr.resources()`` (live ranks only)."""
    return [RankCapacity(row["rank"], row["node"], row["cpu_total"], row["memory_total"],
                         dict(row.get("custom_total") or {}))
            for row in usage["ranks"] if row.get("alive", True)]


def _place_experiment(p: Placement, sup: Demand, wrk: Demand, workers: int, k: int,
                      policy: str) -> bool:
    """Reserve one experiment (all or nothing), grouped like the runtime groups children."""
    placed: list[tuple[int, Demand, Any]] = []
    rank = p.place(sup, group="sweep-supervisors", policy=policy)
    if rank is None:
        return False
    placed.append((rank, sup, "sweep-supervisors"))
    for _ in range(workers):
        rank = p.place(wrk, group=("experiment", k), policy=policy)
        if rank is None:
            for r, d, g in reversed(placed):
                p.release(r, d, group=g)
            return False
        placed.append((rank, wrk, ("experiment", k)))
    return True


def _sum_text(n_sup: int, a: float, n_wrk: int, b: float, unit: str) -> str:
    total = n_sup * a + n_wrk * b
    parts = f"1 x {fmt_value(a)}" + (f" + {n_wrk} x {fmt_value(b)}" if n_wrk else "")
    return f"{parts} = {fmt_value(total)} {unit}"


def _ranks_text(values: Sequence[float], unit: str) -> str:
    groups = sorted(Counter(values).items(), key=lambda kv: (-kv[1], kv[0]))
    return " + ".join(f"{n} ranks x {fmt_value(v)}" for v, n in groups) + f" {unit}"


def plan_capacity(config: SweepConfig, ranks: Sequence[RankCapacity], n_experiments: int, *,
                  policy: str = "pack") -> CapacityPlan:
    """Experiments at once, waves and the arithmetic, by simulating placement.

    Raises SweepConfigError (the config's resources are the mistake) when not even one
    experiment fits, with the placement module's arithmetic.
    """
    sup, wrk = experiment_demands(config)
    workers = config.workers
    ranks = list(ranks)
    p = Placement(ranks)
    for role, demand in (("supervisor", sup), ("worker", wrk)):
        if role == "worker" and workers == 0:
            continue
        why = p.explain_unplaceable(demand)
        if why:
            raise SweepConfigError(f"{config.source}: resources.{role}: found a {role} that "
                                   f"fits no rank ({why}), expected a demand some rank can hold")
    fit = 0
    # Instances without demand fit without end: simulate at most MAX_SIMULATED of them.
    limit = max(min(n_experiments, MAX_SIMULATED // (workers + 1)), 1)
    while fit < limit and _place_experiment(p, sup, wrk, workers, fit, policy):
        fit += 1

    cpus = [r.cpu for r in ranks]
    mems = [r.memory for r in ranks]
    need_cpu = sup.cpu + workers * wrk.cpu
    need_mem = sup.memory + workers * wrk.memory
    cpu_text = _sum_text(1, sup.cpu, workers, wrk.cpu, "millicores")
    mem_text = _sum_text(1, sup.memory, workers, wrk.memory, "MB")
    host = (f"{fmt_value(sum(cpus) / 1000)} host CPUs ({_ranks_text(cpus, 'millicores')}), "
            f"{fmt_value(sum(mems))} MB memory")
    need = f"each experiment needs {cpu_text} and {mem_text}"
    if fit == 0:
        raise SweepConfigError(
            f"{config.source}: resources: found an experiment (1 supervisor + {workers} "
            f"workers) that cannot be placed all at once on {len(ranks)} host ranks; {host}; "
            f"{need}, expected fewer workers or smaller resources")
    # What dividing the totals would promise, to explain when rank boundaries cost capacity.
    naive = math.inf
    if need_cpu:
        naive = min(naive, sum(cpus) // need_cpu)
    if need_mem:
        naive = min(naive, sum(mems) // need_mem)
    for name in set(sup.custom) | set(wrk.custom):
        amount = sup.custom.get(name, 0) + workers * wrk.custom.get(name, 0)
        if amount > 0:
            naive = min(naive, sum(r.custom.get(name, 0) for r in ranks) // amount)

    concurrency = fit
    if fit >= limit and limit < n_experiments:
        at_once = f"at least {fit} at once (the simulation stops at {MAX_SIMULATED} instances)"
        fit = concurrency = n_experiments
    elif fit >= limit:
        at_once = f"all {fit} fit at once" if n_experiments > 1 else "it fits"
    else:
        at_once = f"{fit} at once"
        if naive != math.inf and naive > fit:
            at_once += (f" (dividing totals would give {int(naive)}; rank boundaries leave "
                        "the rest unusable)")
    if config.max_concurrent is not None and config.max_concurrent < concurrency:
        concurrency = config.max_concurrent
        at_once += f", capped at {concurrency} by max_concurrent"
    concurrency = max(min(concurrency, n_experiments), 1) if n_experiments else concurrency
    waves = math.ceil(n_experiments / concurrency) if n_experiments else 0
    summary = (f"{host}; {need} -> {at_once}; {n_experiments} experiment"
               f"{'s' if n_experiments != 1 else ''} -> {waves} wave{'s' if waves != 1 else ''}")
    return CapacityPlan(experiments=n_experiments, fit=fit, concurrency=concurrency,
                        waves=waves, supervisor=sup, worker=wrk, workers=workers,
                        ranks=len(ranks), summary=summary)


def format_plan(config: SweepConfig, experiments: Sequence[Experiment],
                plan: CapacityPlan) -> str:
    """The printable plan: what will run, in which wave, and the capacity arithmetic.

    Waves assume equal run times; the runner starts the next experiment as soon as a
    slot frees up, so this is the order, not a schedule.
    """
    axes = [f"{len(p.values)} {k}" for k, p in config.params.items() if isinstance(p, Grid)]
    shape = " x ".join(axes) if axes else "1 grid point"
    if config.samples > 1:
        shape += f" x {config.samples} samples"
    if len(config.seeds) > 1:
        shape += f" x {len(config.seeds)} seeds"
    lines = [f"sweep {config.name}: {len(experiments)} experiments ({shape})",
             plan.summary, ""]
    varying, constant = split_params([e.params for e in experiments])
    rows = []
    for position, e in enumerate(experiments):
        wave = position // plan.concurrency + 1 if plan.concurrency else 1
        rows.append([str(wave), str(e.index), e.id, str(e.seed),
                     *(fmt_value(e.params.get(k)) for k in varying)])
    lines.append(table(["wave", "#", "id", "seed", *varying], rows))
    if constant:
        lines.append("same in every experiment: " + fmt_params(constant))
    return "\n".join(lines)
