"""Create + end 1,000 instances, vs Ray actors.

    python -m benchmarks.instances [--quick] [--no-ray]

Both sides run the same loop in batches of 20: create 20 instances (0.1 CPU each), wait until
each has answered one call (so it really exists), end them all. yrmpi ends them with
`h.terminate()` and, after the last batch, waits until `yr.resources()` shows every
millicore free again, so the time covers the whole life cycle. Ray ends them with
`ray.kill`. yrmpi: a 9-rank job (8 host ranks), 1,000 instances, 50 batches.
Ray starts one worker process per actor (about 1.4 actors/s on 2 cores), so it runs one
batch of 20 and its rate is extrapolated to 1,000; the row says so.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import yrmpi as yr
from benchmarks import common

BATCH = 20
TOTAL = 1000
RAY_CAP = 20


@yr.instance(invoke_options=yr.InvokeOptions(cpu=100, memory=10))
class Small:
    def ping(self):
        return 1


def yr_job(out: str, reps: int, total: int) -> None:
    yr.init()
    h = Small.invoke()  # warm: class shipped to a rank, scheduler paths exercised once
    yr.get(h.ping.invoke())
    h.terminate(is_sync=True)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        for _ in range(total // BATCH):
            batch = [Small.invoke() for _ in range(BATCH)]
            assert sum(yr.get([b.ping.invoke() for b in batch])) == BATCH
            for b in batch:
                b.terminate()
        while yr.resources()["total"]["cpu_used"] > 0:  # ended everywhere: capacity back
            time.sleep(0.001)
        times.append(time.perf_counter() - start)
    common.write_json(out, {"seconds": times, "total": total})
    yr.finalize()


def ray_job(out: str, cap: int) -> None:
    import ray

    ray.init(num_cpus=9, log_to_driver=False)

    @ray.remote(num_cpus=0.1)
    class RaySmall:
        def ping(self):
            return 1

    start = time.perf_counter()
    made = 0
    while made < cap:
        batch = [RaySmall.remote() for _ in range(min(BATCH, cap - made))]
        assert sum(ray.get([b.ping.remote() for b in batch])) == len(batch)
        for b in batch:
            ray.kill(b)
        made += len(batch)
    common.write_json(out, {"seconds": time.perf_counter() - start, "total": made})
    ray.shutdown()


def run(quick: bool = False, with_ray: bool = True) -> dict:
    reps, total = (1, 200) if quick else (3, TOTAL)
    script = Path(__file__).resolve()
    data, _ = common.run_json_job(lambda out: common.yrmpi_run(
        9, script, ["--job", "yr", "--out", out, "--param", f"reps={reps}", "--param", f"total={total}"]))
    yr_rate = common.summary([total / s for s in data["seconds"]])
    ray_rate = ray_data = None
    if with_ray and common.ray_available():
        ray_data, _ = common.run_json_job(lambda out: common.module_cmd(
            "benchmarks.instances", ["--job", "ray", "--out", out, "--param", f"cap={RAY_CAP}"]))
        ray_rate = common.summary([ray_data["total"] / ray_data["seconds"]])
    no_ray = "skipped (ray not installed)" if not common.ray_available() else "skipped (--no-ray)"
    faster = common.ratio(yr_rate, ray_rate)
    note = f"yrmpi: {total} instances per repetition, 9 ranks"
    if ray_data:
        note += (f"; Ray: {ray_data['total']} actors in {ray_data['seconds']:.1f} s, extrapolated to {TOTAL} "
                 f"= {TOTAL * ray_data['seconds'] / ray_data['total']:.0f} s")
    rows = [common.row(
        "create_end", f"create + end {TOTAL:,} instances (batches of {BATCH}, each answers one call)", "instances/s",
        yrmpi=yr_rate, ray=ray_rate, raw_label="n/a",
        ray_label=f"actors, {RAY_CAP} then extrapolated" if ray_rate else no_ray,
        ratio=faster, ratio_text=f"{faster:.0f}x Ray" if faster else "-", target=">= 100x Ray",
        met=None if faster is None else faster >= 100, note=note)]
    return {"name": "instances", "rows": rows, "details": {"yr": data, "ray": ray_data}}


def main(argv: list[str] | None = None) -> int:
    ns = common.job_args(argv, ("yr", "ray"))
    if ns.job == "yr":
        yr_job(ns.out, int(ns.params["reps"]), int(ns.params["total"]))
        return 0
    if ns.job == "ray":
        ray_job(ns.out, int(ns.params["cap"]))
        return 0
    return common.finish(run(ns.quick, not ns.no_ray), ns)


if __name__ == "__main__":
    sys.exit(main())
