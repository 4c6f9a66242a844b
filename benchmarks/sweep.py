"""Sweep makespan: 16 experiments of 1 supervisor (cpu=100) + 3 workers sleeping 1 s, 17 ranks.

    python -m benchmarks.sweep [--quick] [--no-ray]

yrmpi: the sweep runner, `python -m yrmpi sweep FILE.yaml -n 17 --fresh` with this file's
`Supervisor` as the entry. 16 host ranks x 1000 millicores hold 5 experiments at once
(5 x 3 workers on 15 ranks, the 5 supervisors share the 16th), so the ideal makespan is
ceil(16 / 5) = 4 waves x 1 s. Makespan = first `started` to last `finished` in the sweep's
journal (launch and planning excluded; the whole process is in the notes).
Ray: plain actors, `ray.init(num_cpus=16)`, supervisors at num_cpus=0.1 and workers at 1,
the same at-most-5-at-once policy (without it Ray hands out workers to every supervisor and
can wait forever); makespan from the first submission to the last result, after `ray.init`.
One Ray repetition: Ray starts a process per actor (64 workers + 16 supervisors).
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import time
from pathlib import Path

import yrmpi as yr
from benchmarks import common

EXPERIMENTS = 16
WORKERS = 3
SLEEP_S = 1.0
RANKS = 17


@yr.instance
class Worker:
    def train(self, seconds):
        time.sleep(seconds)
        return seconds


class Supervisor:
    """The sweep's entry: one experiment = this supervisor + its 3 workers."""

    def run(self, params, trial):
        team = [Worker.options(trial.worker_options).invoke() for _ in range(trial.workers)]
        slept = yr.get([w.train.invoke(params["sleep_s"]) for w in team])
        return {"slept": sum(slept)}


SWEEP_YAML = """\
name: bench-sweep
entry: {entry}:Supervisor
run: run
workers: {workers}
resources:
  supervisor: {{cpu: 100, memory: 100}}
  worker: {{cpu: 1000, memory: 100}}
params:
  x: {xs}
  sleep_s: {sleep}
status_interval: 60
output: {output}
"""


def _journal_makespan(folder: Path) -> tuple[float, int]:
    records = [json.loads(line) for line in (folder / "journal.jsonl").read_text().splitlines() if line.strip()]
    started = [r["ts"] for r in records if r["event"] == "started"]
    finished = [r["ts"] for r in records if r["event"] == "finished"]
    return max(finished) - min(started), len(finished)


def yr_sweep(experiments: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="yrmpi-bench-sweep-") as tmp:
        spec = Path(tmp) / "sweep.yaml"
        spec.write_text(SWEEP_YAML.format(entry=Path(__file__).resolve(), workers=WORKERS,
                                          xs=list(range(experiments)), sleep=SLEEP_S, output=Path(tmp) / "out"))
        plan, _ = common.run_child(common.module_cmd("yrmpi", ["sweep", str(spec), "--dry-run", "-n", str(RANKS)]))
        match = re.search(r"-> (\d+) at once; \d+ experiments -> (\d+) waves", plan)
        if not match:
            raise common.BenchError(f"no capacity line in the sweep plan:\n{plan[:2000]}")
        at_once, waves = int(match.group(1)), int(match.group(2))
        _, wall = common.run_child(common.module_cmd("yrmpi", ["sweep", str(spec), "-n", str(RANKS), "--fresh"]))
        makespan, done = _journal_makespan(Path(tmp) / "out")
    if done != experiments:
        raise common.BenchError(f"the sweep finished {done} of {experiments} experiments")
    return {"makespan_s": makespan, "process_s": wall, "at_once": at_once, "waves": waves}


def ray_job(out: str, experiments: int, at_once: int) -> None:
    import ray

    ray.init(num_cpus=RANKS - 1, log_to_driver=False)

    @ray.remote(num_cpus=1)
    class RayWorker:
        def train(self, seconds):
            time.sleep(seconds)
            return seconds

    @ray.remote(num_cpus=0.1)
    class RaySupervisor:
        def run(self, sleep_s, workers):
            team = [RayWorker.remote() for _ in range(workers)]
            slept = ray.get([w.train.remote(sleep_s) for w in team])
            for w in team:
                ray.kill(w)
            return sum(slept)

    start = time.perf_counter()
    queue = list(range(experiments))
    running: dict = {}
    while queue or running:
        while queue and len(running) < at_once:
            queue.pop(0)
            sup = RaySupervisor.remote()
            running[sup.run.remote(SLEEP_S, WORKERS)] = sup
        ready, _ = ray.wait(list(running), num_returns=1)
        for ref in ready:
            ray.get(ref)
            ray.kill(running.pop(ref))
    common.write_json(out, {"makespan_s": time.perf_counter() - start})
    ray.shutdown()


def run(quick: bool = False, with_ray: bool = True) -> dict:
    reps = 1 if quick else 3
    samples = [yr_sweep(EXPERIMENTS) for _ in range(reps)]
    at_once, waves = samples[0]["at_once"], samples[0]["waves"]
    ideal = waves * SLEEP_S
    yr_t = common.summary([s["makespan_s"] for s in samples])
    proc_t = common.summary([s["process_s"] for s in samples])
    ray_t = ray_data = None
    if with_ray and common.ray_available() and not quick:
        ray_data, _ = common.run_json_job(lambda out: common.module_cmd("benchmarks.sweep", [
            "--job", "ray", "--out", out, "--param", f"experiments={EXPERIMENTS}", "--param", f"at_once={at_once}"]),
            timeout=900)
        ray_t = common.summary([ray_data["makespan_s"]])
    if not common.ray_available():
        no_ray = "skipped (ray not installed)"
    else:
        no_ray = "skipped (--quick)" if quick else "skipped (--no-ray)"
    over = common.med(yr_t) / ideal
    text = f"{over:.3f}x ideal"
    if ray_t:
        text += f"; Ray {common.med(ray_t) / ideal:.1f}x ideal"
    rows = [common.row(
        "sweep_makespan", f"sweep makespan, {EXPERIMENTS} x (1 supervisor cpu=100 + {WORKERS} workers sleeping "
        f"{SLEEP_S:g} s), {RANKS} ranks", "s", yrmpi=yr_t, raw={"median": ideal, "min": ideal, "max": ideal, "n": 1,
                                                                  "samples": [ideal]},
        raw_label=f"ideal ({waves} waves x {SLEEP_S:g} s)", ray=ray_t,
        ray_label="plain actors" if ray_t else no_ray, ratio=over, ratio_text=text, target="within 10% of ideal",
        met=over <= 1.10,
        note=f"`yrmpi sweep -n {RANKS}`: {at_once} experiments at once; whole process incl. launch "
             f"{common.fmt_stat(proc_t, 's')}; the raw column is the ideal, not a measurement")]
    return {"name": "sweep", "rows": rows, "details": {"yr": samples, "ray": ray_data, "ideal_s": ideal}}


def main(argv: list[str] | None = None) -> int:
    ns = common.job_args(argv, ("ray",))
    if ns.job:
        ray_job(ns.out, int(ns.params["experiments"]), int(ns.params["at_once"]))
        return 0
    return common.finish(run(ns.quick, not ns.no_ray), ns)


if __name__ == "__main__":
    sys.exit(main())
