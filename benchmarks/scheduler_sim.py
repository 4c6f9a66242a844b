"""The placement module at scale, on paper: a simulated sweep on 100 .. 10,000 ranks (no MPI).

    python -m benchmarks.scheduler_sim [--quick]

`yrmpi.scheduling.placement.Placement` (the same object the scheduler on rank 0 owns) drives a simulated
allocation of 100 ranks per node (1000 millicores, 4000 MB each) through a sweep of 2,500
experiments, with the scheduler's own policies:
- an experiment is a supervisor (cpu=100, placed for the driver, no group) plus 3, 7 or 15
  workers (cpu=1000, memory=1000, grouped under their supervisor: "pack" keeps them on one
  node); it runs for 50..150 simulated seconds once every member is placed;
- creations that do not fit wait in a FIFO list that is retried whenever capacity frees up
  (as `Scheduler._retry_waiting` does); the sweep driver starts the next experiment whenever
  no creation is waiting (start-as-soon-as-room, like `yrmpi sweep`);
- churn: 30% of experiments replace one worker part-way (release + place in the group);
- failures: 1% of the ranks die during the sweep (`remove_rank`); an experiment that loses
  its supervisor fails, its workers are released and it is queued again; one that loses a
  worker re-creates it.
Simulated time costs nothing: events run back to back. Reported per scale: placement
decisions (place attempts, including failed retries, releases, rank removals) per second of
CPU time spent inside `Placement`, place latency (median, p99), the total placement time the
driver spends on the whole sweep, building the pool, one `usage()` snapshot (what
`yr.resources()` costs), and the simulated makespan and cpu utilisation.
"""

from __future__ import annotations

import heapq
import random
import statistics
import sys
import time
import tracemalloc
from dataclasses import dataclass, field

from benchmarks import common
from yrmpi.scheduling.placement import Demand, Placement, RankCapacity

RANKS_PER_NODE = 100
SCALES = (100, 1_000, 10_000)
EXPERIMENTS = 2_500
SUP = Demand(cpu=100, memory=200)
WORKER = Demand(cpu=1000, memory=1000)
TEAM_SIZES = (3, 7, 15)
CHURN = 0.30
FAIL_FRACTION = 0.01


@dataclass
class Inst:
    iid: int
    exp: Exp
    demand: Demand
    group: int | None
    rank: int | None = None
    alive: bool = True


@dataclass
class Exp:
    index: int
    workers: int
    duration: float
    attempt: int = 0
    sup: Inst | None = None
    team: list[Inst] = field(default_factory=list)
    started: float | None = None  # all members placed
    finish_due: bool = False
    active: bool = False  # admitted and not failed or finished: its events still count
    done: bool = False


class Sim:
    def __init__(self, ranks: int, experiments: int, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        nodes = max(1, ranks // RANKS_PER_NODE)
        caps = [RankCapacity(r, f"node{r // RANKS_PER_NODE:04d}", 1000, 4000) for r in range(ranks)]
        tracemalloc.start()
        t0 = time.perf_counter()
        self.placement = Placement(caps)
        self.build_s = time.perf_counter() - t0
        self.pool_mb = tracemalloc.get_traced_memory()[0] / 1e6
        tracemalloc.stop()
        self.ranks, self.nodes = ranks, nodes
        self.queue = [Exp(i, self.rng.choice(TEAM_SIZES), self.rng.uniform(50, 150)) for i in range(experiments)]
        self.queue.reverse()  # pop() from the end = sweep order
        self.total = experiments
        self.waiting: list[Inst] = []
        self.on_rank: dict[int, set[int]] = {}
        self.insts: dict[int, Inst] = {}
        self.events: list = []
        self.seq = 0
        self.now = 0.0
        self.next_iid = 1
        self.finished = self.failed_attempts = self.rank_deaths = self.churned = 0
        self.place_ns: list[int] = []
        self.failed_place = self.releases = self.removals = 0
        self.other_ns = 0  # release + remove_rank
        self.cpu_seconds = 0.0  # integral of used cpu over simulated time (millicore-s)
        self.used = 0
        self.last_t = 0.0
        self.last_finish = 0.0

    # -- the scheduler's side ------------------------------------------------------------------
    def _advance(self, t: float) -> None:
        self.cpu_seconds += self.used * (t - self.last_t)
        self.last_t = self.now = t

    def _place(self, inst: Inst) -> bool:
        t0 = time.perf_counter_ns()
        rank = self.placement.place(inst.demand, group=inst.group, policy="pack")
        self.place_ns.append(time.perf_counter_ns() - t0)
        if rank is None:
            self.failed_place += 1
            return False
        inst.rank = rank
        self.used += inst.demand.cpu
        self.on_rank.setdefault(rank, set()).add(inst.iid)
        self._placed(inst)
        return True

    def _release(self, inst: Inst) -> None:
        if inst.rank is None:
            return
        t0 = time.perf_counter_ns()
        self.placement.release(inst.rank, inst.demand, group=inst.group)
        self.other_ns += time.perf_counter_ns() - t0
        self.releases += 1
        self.used -= inst.demand.cpu
        self.on_rank[inst.rank].discard(inst.iid)
        inst.rank = None

    def _create(self, exp: Exp, demand: Demand, group: int | None) -> None:
        inst = Inst(self.next_iid, exp, demand, group)
        self.next_iid += 1
        self.insts[inst.iid] = inst
        if group is None:
            exp.sup = inst
        else:
            exp.team.append(inst)
        if not self._place(inst):
            self.waiting.append(inst)

    def _retry_waiting(self) -> None:
        still = []
        for inst in self.waiting:
            if inst.alive and not self._place(inst):
                still.append(inst)
        self.waiting = still

    def _end(self, inst: Inst) -> None:
        inst.alive = False
        self._release(inst)
        self.insts.pop(inst.iid, None)

    # -- experiments -----------------------------------------------------------------------------
    def _at(self, delay: float, kind: str, payload: object) -> None:
        self.seq += 1
        heapq.heappush(self.events, (self.now + delay, self.seq, kind, payload))

    def _admit(self) -> None:
        while self.queue and not self.waiting:
            exp = self.queue.pop()
            exp.attempt += 1
            exp.team, exp.started, exp.finish_due, exp.active = [], None, False, True
            self._create(exp, SUP, None)

    def _placed(self, inst: Inst) -> None:
        exp = inst.exp
        if inst is exp.sup:  # the supervisor's constructor runs: it creates its team
            for _ in range(exp.workers):
                self._create(exp, WORKER, exp.sup.iid)
            return
        if exp.started is None and all(w.rank is not None for w in exp.team) and len(exp.team) == exp.workers:
            exp.started = self.now
            self._at(exp.duration, "finish", (exp, exp.attempt))
            if self.rng.random() < CHURN:
                self._at(self.rng.uniform(0, exp.duration), "churn", (exp, exp.attempt))
        elif exp.finish_due and all(w.rank is not None for w in exp.team):
            self._finish(exp)

    def _finish(self, exp: Exp) -> None:
        for w in exp.team:
            self._end(w)
        self._end(exp.sup)
        exp.done, exp.active = True, False
        self.finished += 1
        self.last_finish = self.now

    def _on_finish(self, exp: Exp, attempt: int) -> None:
        if not exp.active or exp.attempt != attempt:
            return
        if all(w.rank is not None for w in exp.team):
            self._finish(exp)
        else:
            exp.finish_due = True  # a replaced worker still waits for room

    def _on_churn(self, exp: Exp, attempt: int) -> None:
        if not exp.active or exp.attempt != attempt or not exp.team:
            return
        old = self.rng.choice(exp.team)
        exp.team.remove(old)
        self._end(old)
        self.churned += 1
        self._create(exp, WORKER, exp.sup.iid)

    def _on_rank_death(self, _payload: object) -> None:
        live = self.placement.live_ranks
        if len(live) <= 1:
            return
        rank = self.rng.choice(live)
        t0 = time.perf_counter_ns()
        self.placement.remove_rank(rank)
        self.other_ns += time.perf_counter_ns() - t0
        self.removals += 1
        self.rank_deaths += 1
        lost = [self.insts[i] for i in self.on_rank.pop(rank, ()) if i in self.insts]
        for inst in lost:
            self.used -= inst.demand.cpu
            inst.rank = None  # its reservation died with the rank
        for inst in lost:
            exp = inst.exp
            if not exp.active or not inst.alive:
                continue
            inst.alive = False
            self.insts.pop(inst.iid, None)
            if inst is exp.sup:  # the experiment fails: its team ends, it runs again later
                for w in exp.team:
                    self._end(w)
                self.failed_attempts += 1
                exp.active = False  # its pending finish/churn events no longer count
                self.queue.append(exp)
            else:
                exp.team.remove(inst)
                self._create(exp, WORKER, exp.sup.iid)

    def run(self) -> dict:
        deaths = max(1, int(self.ranks * FAIL_FRACTION))
        mean_team = sum(TEAM_SIZES) / len(TEAM_SIZES)
        # Deaths spread over 90% of the makespan a perfect packing would reach, so all land mid-sweep.
        expected = 0.9 * self.total * 100 * (SUP.cpu / 1000 + mean_team) / self.ranks
        for _ in range(deaths):
            self.seq += 1
            heapq.heappush(self.events, (self.rng.uniform(0, expected), self.seq, "death", None))
        wall0 = time.perf_counter()
        self._admit()
        while self.events:
            t, _, kind, payload = heapq.heappop(self.events)
            self._advance(t)
            if kind == "finish":
                self._on_finish(*payload)
            elif kind == "churn":
                self._on_churn(*payload)
            else:
                self._on_rank_death(payload)
            if self.waiting:
                self._retry_waiting()
            self._admit()
            if self.finished == self.total:
                break
        wall = time.perf_counter() - wall0
        t0 = time.perf_counter()
        self.placement.usage()
        usage_s = time.perf_counter() - t0
        if self.finished != self.total:
            raise common.BenchError(f"simulation ended with {self.finished}/{self.total} experiments finished "
                                    f"({len(self.waiting)} creations waiting)")
        place_s = sum(self.place_ns) / 1e9
        placement_s = place_s + self.other_ns / 1e9
        decisions = len(self.place_ns) + self.releases + self.removals
        lat = sorted(self.place_ns)
        return {
            "ranks": self.ranks, "nodes": self.nodes, "experiments": self.total, "decisions": decisions,
            "place_attempts": len(self.place_ns), "failed_attempts": self.failed_place, "releases": self.releases,
            "rank_deaths": self.rank_deaths, "experiment_failures": self.failed_attempts, "churned": self.churned,
            "placement_s": placement_s, "decisions_per_s": decisions / placement_s,
            "place_median_us": statistics.median(lat) / 1e3, "place_p99_us": lat[int(len(lat) * 0.99)] / 1e3,
            "sim_wall_s": wall, "build_s": self.build_s, "pool_mb": self.pool_mb, "usage_ms": usage_s * 1e3,
            "makespan_sim_s": self.last_finish,
            "utilisation": self.cpu_seconds / (self.now * self.ranks * 1000) if self.now else 0.0,
        }


def scale_table(results: list[dict]) -> str:
    lines = ["| ranks (nodes) | decisions | decisions/s | place median / p99 | placement time for the sweep "
             "| whole sim | build pool | usage() | failures (ranks / experiments) | cpu utilisation |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        lines.append(
            f"| {r['ranks']:,} ({r['nodes']}) | {r['decisions']:,} ({r['failed_attempts']:,} failed tries) "
            f"| {r['decisions_per_s']:,.0f} | {r['place_median_us']:.1f} / {r['place_p99_us']:.1f} us "
            f"| {r['placement_s']:.2f} s | {r['sim_wall_s']:.2f} s | {r['build_s'] * 1e3:.1f} ms, "
            f"{r['pool_mb']:.2f} MB | {r['usage_ms']:.1f} ms | {r['rank_deaths']} / {r['experiment_failures']} "
            f"| {r['utilisation']:.0%} |")
    return "\n".join(lines)


def run(quick: bool = False, with_ray: bool = True) -> dict:
    experiments = 500 if quick else EXPERIMENTS
    results = [Sim(ranks, experiments).run() for ranks in SCALES]
    big = results[-1]
    rate = common.summary([big["decisions_per_s"]])
    small = results[0]
    growth = small["placement_s"] and big["placement_s"] / small["placement_s"]
    rows = [common.row(
        "scheduler_sim", f"scheduler sim: placement decisions/s, {big['ranks']:,} ranks / {big['nodes']} nodes, "
        f"{experiments:,} experiments with churn and failures", "/s", yrmpi=rate, raw_label="n/a", ray_label="n/a",
        ratio=growth, ratio_text=f"driver placement time {growth:.1f}x the 100-rank run for the same sweep",
        target="(reported)", met=None,
        note=f"{big['place_median_us']:.1f} us median place at {big['ranks']:,} ranks; see the scale table")]
    return {"name": "scheduler_sim", "rows": rows, "details": {"scales": results}, "extra_md": scale_table(results)}


def main(argv: list[str] | None = None) -> int:
    ns = common.job_args(argv, ())
    result = run(ns.quick)
    common.finish(result, ns)
    print()
    print(result["extra_md"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
