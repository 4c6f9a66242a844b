"""Job start to first result: the seed's tree with no sleeps, timed from outside the process.

    python -m benchmarks.startup [--quick] [--no-ray]

The tree: two supervisors (1 CPU each), each creates 3 workers (1 CPU each) and gathers one
call from each; the driver gathers both reports. The clock starts just before the process is
spawned and stops when the driver holds both reports ("first result"), and again when the
process has exited ("whole process"), so interpreter start, imports, MPI launch / `ray.init`,
and shutdown all count.
- yrmpi: `python -m yrmpi run -n 9 benchmarks/startup.py` (1 driver + 8 one-CPU host ranks).
- Ray:   `python -m benchmarks.startup` with `ray.init(num_cpus=9)` and the same tree as actors.
Runs alternate (yrmpi, Ray, yrmpi, ...).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import yrmpi as yr
from benchmarks import common

opt = yr.InvokeOptions(cpu=1000)
CONFIGS = ({"lr": 0.01}, {"lr": 0.001})
WORKERS = 3


@yr.instance(invoke_options=opt)
class TrainingWorker:
    def train(self, shard_id, hyperparams):
        return f"Loss: {0.1 / hyperparams['lr']}"


@yr.instance(invoke_options=opt)
class TrainingSupervisor:
    def __init__(self, hyperparams):
        self.hyperparams = hyperparams
        self.workers = []

    def start_training(self, num_workers):
        self.workers = [TrainingWorker.invoke() for _ in range(num_workers)]
        results = yr.get([w.train.invoke(i, self.hyperparams) for i, w in enumerate(self.workers)])
        return f"Hyperparameter {self.hyperparams} experiment completed, results: {results}"


def yr_job(out: str) -> None:
    yr.init()
    supervisors = [TrainingSupervisor.invoke(cfg) for cfg in CONFIGS]
    reports = yr.get([s.start_training.invoke(num_workers=WORKERS) for s in supervisors])
    first = time.time()
    assert len(reports) == 2 and all("completed" in r for r in reports), reports
    common.write_json(out, {"first_result": first})
    yr.finalize()


def ray_job(out: str) -> None:
    import ray

    ray.init(num_cpus=9, log_to_driver=False)

    @ray.remote(num_cpus=1)
    class Worker:
        def train(self, shard_id, hyperparams):
            return f"Loss: {0.1 / hyperparams['lr']}"

    @ray.remote(num_cpus=1)
    class Supervisor:
        def __init__(self, hyperparams):
            self.hyperparams = hyperparams
            self.workers = []

        def start_training(self, num_workers):
            self.workers = [Worker.remote() for _ in range(num_workers)]
            results = ray.get([w.train.remote(i, self.hyperparams) for i, w in enumerate(self.workers)])
            return f"Hyperparameter {self.hyperparams} experiment completed, results: {results}"

    supervisors = [Supervisor.remote(cfg) for cfg in CONFIGS]
    reports = ray.get([s.start_training.remote(WORKERS) for s in supervisors])
    first = time.time()
    assert len(reports) == 2 and all("completed" in r for r in reports), reports
    common.write_json(out, {"first_result": first})
    ray.shutdown()


def _timed(cmd_for) -> tuple[float, float]:
    """(spawn to first result, spawn to exit) in seconds."""
    spawned = time.time()
    data, wall = common.run_json_job(cmd_for)
    return data["first_result"] - spawned, wall


def run(quick: bool = False, with_ray: bool = True) -> dict:
    reps_yr, reps_ray = (2, 1) if quick else (5, 3)
    script = Path(__file__).resolve()
    use_ray = with_ray and common.ray_available()
    yr_first, yr_exit, ray_first, ray_exit = [], [], [], []
    for i in range(max(reps_yr, reps_ray if use_ray else 0)):
        if i < reps_yr:
            first, wall = _timed(lambda out: common.yrmpi_run(9, script, ["--job", "yr", "--out", out]))
            yr_first.append(first)
            yr_exit.append(wall)
        if use_ray and i < reps_ray:
            first, wall = _timed(lambda out: common.module_cmd("benchmarks.startup", ["--job", "ray", "--out", out]))
            ray_first.append(first)
            ray_exit.append(wall)
    yf, ye = common.summary(yr_first), common.summary(yr_exit)
    rf, rexit = common.summary(ray_first), common.summary(ray_exit)
    no_ray = "skipped (ray not installed)" if not common.ray_available() else "skipped (--no-ray)"
    faster = common.ratio(rf, yf)
    faster_exit = common.ratio(rexit, ye)
    rows = [
        common.row("startup_first", "job start to first result (seed tree: 2 supervisors x 3 workers, no sleeps)",
                   "s", yrmpi=yf, ray=rf, ray_label="ray.init(num_cpus=9)" if rf else no_ray, raw_label="n/a",
                   ratio=faster, ratio_text=f"{faster:.1f}x faster than Ray" if faster else "-",
                   target=">= 5x faster than Ray", met=None if faster is None else faster >= 5,
                   note="`python -m yrmpi run -n 9` (1 driver + 8 host ranks), clock from spawn"),
        common.row("startup_exit", "same, whole process until it has exited", "s", yrmpi=ye, ray=rexit,
                   ray_label="ray.init(num_cpus=9)" if rexit else no_ray, raw_label="n/a", ratio=faster_exit,
                   ratio_text=f"{faster_exit:.1f}x faster than Ray" if faster_exit else "-",
                   target="(reported)", met=None),
    ]
    return {"name": "startup", "rows": rows, "details": {"yr_first_s": yr_first, "yr_exit_s": yr_exit,
                                                          "ray_first_s": ray_first, "ray_exit_s": ray_exit}}


def main(argv: list[str] | None = None) -> int:
    ns = common.job_args(argv, ("yr", "ray"))
    if ns.job:
        (yr_job if ns.job == "yr" else ray_job)(ns.out)
        return 0
    return common.finish(run(ns.quick, not ns.no_ray), ns)


if __name__ == "__main__":
    sys.exit(main())
