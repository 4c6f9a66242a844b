"""Group allreduce of 64 MB over 4 workers vs raw `Allreduce` on the same ranks.

    python -m benchmarks.collectives [--quick]

This reuses `benchmarks/allreduce.py` (its `Bench` instance class, unchanged): four workers,
one rank each, in a 5-rank job; each call of `Bench.run` times raw mpi4py `Allreduce` on
`yr.collective.comm()` (exactly the group's ranks) and `yr.collective.allreduce` in
alternating order on the same buffers and returns the slowest member's time per operation.
Here it is called once per repetition with one round and the 64 MB size only, so every
repetition is one sample of each. No Ray column: Ray has no allreduce of actor groups
without ray.util.collective and its extra backends.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yrmpi as yr
from benchmarks import common

SIZE_LABEL = "64 MB"
NBYTES = 64 << 20
WORKERS = 4


def yr_job(out: str, reps: int, budget: float) -> None:
    from benchmarks.allreduce import Bench

    yr.init()
    workers = [Bench.invoke() for _ in range(WORKERS)]
    samples = []
    for _ in range(reps):
        results = yr.get([w.run.invoke({SIZE_LABEL: NBYTES}, budget, 1) for w in workers], timeout=1800)
        samples.append(results[0][SIZE_LABEL])
    common.write_json(out, {"samples": samples})
    yr.finalize()


def run(quick: bool = False, with_ray: bool = True) -> dict:
    reps, budget = (2, 0.1) if quick else (7, 0.6)
    script = Path(__file__).resolve()
    data, _ = common.run_json_job(lambda out: common.yrmpi_run(
        WORKERS + 1, script, ["--job", "yr", "--out", out, "--param", f"reps={reps}", "--param", f"budget={budget}"]))
    ms = 1e3
    yr_t = common.summary([s["yr"] * ms for s in data["samples"]])
    raw_t = common.summary([s["raw"] * ms for s in data["samples"]])
    alloc_t = common.summary([s["yr+alloc"] * ms for s in data["samples"]])
    pairs = common.paired([s["yr"] for s in data["samples"]], [s["raw"] for s in data["samples"]])
    slower = pairs["median"]
    rows = [common.row(
        "allreduce_64mb", "group allreduce 64 MB (float32), 4 workers, slowest member", "ms", yrmpi=yr_t, raw=raw_t,
        raw_label="Allreduce on same ranks", ray_label="n/a", ratio=slower,
        ratio_text=common.paired_text(pairs, "raw", "{:.2f}x"),
        target="within 1.10x of raw", met=slower <= 1.10,
        note=f"yr.collective.allreduce with a new result array each call: {common.fmt_stat(alloc_t, 'ms')}; "
             f"{data['samples'][0]['reps']} operations per timed batch")]
    return {"name": "collectives", "rows": rows, "details": data}


def main(argv: list[str] | None = None) -> int:
    ns = common.job_args(argv, ("yr",))
    if ns.job:
        yr_job(ns.out, int(ns.params["reps"]), float(ns.params["budget"]))
        return 0
    return common.finish(run(ns.quick, not ns.no_ray), ns)


if __name__ == "__main__":
    sys.exit(main())
