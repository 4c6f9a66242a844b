"""Sizing a sweep onto Slurm ranks: how many, how big, and the arithmetic behind it.

The count comes from the sweep's own capacity plan (sweep.plan), run on host ranks with the
per-rank capacity this allocation will give them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import SlurmError

if TYPE_CHECKING:
    from ..sweep.config import SweepConfig
    from ..sweep.plan import CapacityPlan

__all__ = ["AUTO_MEM_CAP_MB", "Sizing", "size_sweep"]

AUTO_MEM_CAP_MB = 4000  # default --mem-per-cpu never asks for more than this (unless one instance needs it)


@dataclass(frozen=True)
class Sizing:
    """How many ranks a sweep asks Slurm for, and why (``lines`` is the arithmetic, for comments)."""

    ntasks: int
    nodes: int | None
    tasks_per_node: int | None
    cpus_per_task: int
    mem_per_cpu: int  # MB
    concurrency: int
    experiments: int
    todo: int
    lines: tuple[str, ...]
    gpus_per_node: int | None = None


def _host_ranks(hosts: int, cpu: int, memory: int, custom: dict[str, float],
                tasks_per_node: int | None, gpus_per_node: int | None = None) -> list:
    """Host ranks 1..hosts as Slurm places them (block distribution: rank r on node r // T), as
    the sweep's planner takes them (the rows of a usage table). With GPUs per node, each rank's
    `gpu` capacity is what the runtime gives it at start-up (core.devices.share: the node's GPUs
    over its host ranks, in rank order)."""
    from ..core.devices import share
    from ..sweep.plan import ranks_from_usage

    per_node = tasks_per_node or (hosts + 1)
    gpus: dict[int, int] = {}
    if gpus_per_node:
        nodes: dict[int, list[int]] = {}
        for r in range(1, hosts + 1):
            nodes.setdefault(r // per_node, []).append(r)
        ids = [str(i) for i in range(gpus_per_node)]
        for ranks in nodes.values():
            gpus.update((r, len(mine)) for r, mine in zip(ranks, share([ids] * len(ranks))))
    return ranks_from_usage({"ranks": [
        {"rank": r, "node": f"node{r // per_node}", "cpu_total": cpu, "memory_total": memory,
         "custom_total": {**custom, "gpu": gpus[r]} if gpus_per_node else custom}
        for r in range(1, hosts + 1)]})


def _auto_mem_per_cpu(config: SweepConfig, cpus_per_task: int, wanted: int) -> tuple[int, str]:
    """(MB per CPU, why) when --mem-per-cpu is not given.

    Enough that memory never limits placement before CPU does: the most memory any mix of the
    `wanted` experiments' instances can put on one rank within its CPU (rounded up to 100 MB),
    capped at AUTO_MEM_CAP_MB per CPU (then memory does limit, and the plan asks for more
    ranks), but never below the largest single instance.
    """
    rank_cpu = cpus_per_task * 1000
    sup, wrk = config.supervisor_resources, config.worker_resources
    max_sup = wanted if sup.cpu == 0 else min(wanted, rank_cpu // sup.cpu)
    need = 0
    for a in range(max_sup + 1):
        room = rank_cpu - a * sup.cpu
        b = 0 if not config.workers else (wanted * config.workers if wrk.cpu == 0
                                          else min(wanted * config.workers, room // wrk.cpu))
        need = max(need, a * sup.memory + b * wrk.memory)
    largest = max(sup.memory, wrk.memory if config.workers else 0)
    per_cpu = max(math.ceil(need / cpus_per_task / 100) * 100, 100)
    floor = math.ceil(largest / cpus_per_task / 100) * 100
    if per_cpu > AUTO_MEM_CAP_MB and floor <= AUTO_MEM_CAP_MB:
        return AUTO_MEM_CAP_MB, (f"capped at {AUTO_MEM_CAP_MB} MB per CPU, so memory limits how many share a rank; "
                                 "set --mem-per-cpu to change")
    return max(per_cpu, floor), "enough that memory never limits before CPU; set --mem-per-cpu to change"


def _fit_hint(config: SweepConfig, rank_cpu: int, rank_mem: int, cpus_per_task: int,
              gpus: bool = False) -> str:
    """What to ask Slurm for when one instance is bigger than a rank (empty when it is not that)."""
    demands = [config.supervisor_resources] + ([config.worker_resources] if config.workers else [])
    if not gpus and any(d.custom.get("gpu") for d in demands):
        return "; the sweep asks for GPUs: add --gpus-per-node G"
    cpu = max(d.cpu for d in demands)
    memory = max(d.memory for d in demands)
    if cpu > rank_cpu:
        return f"; try --cpus-per-task {math.ceil(cpu / 1000)}"
    if memory > rank_mem:
        return f"; try --mem-per-cpu {math.ceil(memory / cpus_per_task / 100) * 100}"
    return ""


def size_sweep(config: SweepConfig, todo: int, experiments: int, *, nodes: int | None = None,
               tasks_per_node: int | None = None, cpus_per_task: int = 1, mem_per_cpu: int | None = None,
               custom: dict[str, float] | None = None, gpus_per_node: int | None = None) -> Sizing:
    """Ranks for the sweep's wanted concurrency (max_concurrent, else everything left) plus the driver.

    The count comes from the sweep's own capacity plan (simulated placement on ranks with this
    allocation's per-rank capacity), searched for the fewest host ranks that hold the wanted
    number of experiments at once. With --nodes and --tasks-per-node the count is given and the
    plan says how many experiments fit. With --gpus-per-node G the ranks of a node share its G
    GPUs as the runtime will (one each for the first G host ranks), and --tasks-per-node
    defaults to G + 1: a rank per GPU and one for the driver or the supervisors.
    """
    from ..sweep.config import SweepConfigError
    from ..sweep.plan import plan_capacity

    if cpus_per_task < 1:
        raise SlurmError(f"--cpus-per-task: found {cpus_per_task}, expected an integer >= 1")
    for name, value in (("--nodes", nodes), ("--tasks-per-node", tasks_per_node), ("--mem-per-cpu", mem_per_cpu),
                        ("--gpus-per-node", gpus_per_node)):
        if value is not None and value < 1:
            raise SlurmError(f"{name}: found {value}, expected an integer >= 1")
    custom = dict(custom or {})
    if gpus_per_node is not None:
        custom.pop("gpu", None)  # counted per rank from the node's GPUs
        if tasks_per_node is None:
            tasks_per_node = gpus_per_node + 1
    left = max(todo, 1)
    wanted = min(config.max_concurrent or left, left)
    mem_note = "given"
    if mem_per_cpu is None:
        mem_per_cpu, mem_note = _auto_mem_per_cpu(config, cpus_per_task, wanted)
    rank_cpu, rank_mem = cpus_per_task * 1000, mem_per_cpu * cpus_per_task

    def plan_for(hosts: int, want: int) -> CapacityPlan:
        return plan_capacity(config, _host_ranks(hosts, rank_cpu, rank_mem, custom, tasks_per_node, gpus_per_node),
                             want)

    try:
        if nodes is not None and tasks_per_node is not None:
            ntasks = nodes * tasks_per_node
            if ntasks < 2:
                raise SlurmError(f"--nodes {nodes} x --tasks-per-node {tasks_per_node} = {ntasks} rank; "
                                 "a yrmpi job needs a driver and at least one host rank")
            how = f"--nodes {nodes} x --tasks-per-node {tasks_per_node} = {ntasks} ranks (given)"
        else:
            # Fewest host ranks holding `wanted` at once; one rank per instance always suffices.
            lo, hi = 1, wanted * (config.workers + 1)
            if plan_for(hi, wanted).fit < wanted:
                raise SlurmError(f"{wanted} experiments do not fit at once even on {hi} host ranks; "
                                 "lower max_concurrent or the resources")
            while lo < hi:
                mid = (lo + hi) // 2
                if plan_for(mid, wanted).fit >= wanted:
                    hi = mid
                else:
                    lo = mid + 1
            ntasks = lo + 1
            how = f"{lo} host ranks hold {wanted} at once (simulated placement) + 1 driver = {ntasks} ranks"
            if tasks_per_node is not None:
                nodes = max(math.ceil(ntasks / tasks_per_node), nodes or 1)
                full = nodes * tasks_per_node
                if full != ntasks:
                    how += f"; rounded up to {nodes} nodes x {tasks_per_node} = {full} ranks"
                ntasks = full
            elif nodes is not None and ntasks < nodes:
                how += f"; raised to one rank per node ({nodes})"
                ntasks = nodes
        plan = plan_for(ntasks - 1, left)
    except SweepConfigError as exc:
        raise SlurmError(str(exc) + _fit_hint(config, rank_cpu, rank_mem, cpus_per_task,
                                              bool(gpus_per_node) or bool(custom.get("gpu")))) from None
    lines = (
        f"sweep {config.name}: {experiments} experiments, {todo} left to run"
        + (f"; max_concurrent {config.max_concurrent}" if config.max_concurrent else ""),
        f"each host rank: {cpus_per_task} CPU (--cpus-per-task) = {rank_cpu} millicores, "
        f"{cpus_per_task} x {mem_per_cpu} MB (--mem-per-cpu, {mem_note}) = {rank_mem} MB"
        + (f", custom {json.dumps(custom)}" if custom else "")
        + (f"; {gpus_per_node} GPUs per node (--gpus-per-node) over its host ranks, one each for the first "
           f"{gpus_per_node}" if gpus_per_node else ""),
        f"wanted at once: {wanted} -> {how}",
        f"plan on {ntasks - 1} host ranks: {plan.summary}",
    )
    return Sizing(ntasks=ntasks, nodes=nodes, tasks_per_node=tasks_per_node, cpus_per_task=cpus_per_task,
                  mem_per_cpu=mem_per_cpu, concurrency=plan.concurrency, experiments=experiments, todo=todo,
                  lines=lines, gpus_per_node=gpus_per_node)

