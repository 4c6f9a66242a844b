"""A 100 MB numpy result to the driver: yrmpi vs raw mpi4py Send/Recv vs ray.get.

    python -m benchmarks.transfer [--quick] [--no-ray]

yrmpi (a 3-rank job, the instance on rank 1): `yr.get(h.result.invoke())`, where the method
returns a 100 MB float64 array it holds (the array travels out of band, not pickled; the
driver gets a fresh array each time).
raw: in the same job, between the same two ranks, the instance `Send`s the same array on
COMM_WORLD and the driver `Recv`s it into a buffer allocated once (raw's best case); the
clock covers the call that starts the send and the `Recv`. Rounds alternate.
Ray: an actor returns the same array; `ray.get(a.result.remote())` (the object store copies
the array in; the driver reads it zero-copy).
raw-fresh (details only): the same `Recv` into a newly allocated array each time, which is
what yrmpi has to do (it hands the driver a new array).
Bandwidth = 100 MB (10^8 bytes) / seconds.

A second yrmpi job repeats the yrmpi and raw measurements with glibc told to keep freed
memory instead of returning it to the kernel (`MALLOC_MMAP_THRESHOLD_=1 GiB`,
`MALLOC_TRIM_THRESHOLD_=4 GiB`): a fresh 100 MB array then reuses pages that are already
mapped instead of faulting in 24,000 new ones, which is most of the gap to raw on this VM.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

import yrmpi as yr
from benchmarks import common

NBYTES = 100_000_000
TAG = 78
MALLOC_KEEP = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(4 << 30)}


@yr.instance(invoke_options=yr.InvokeOptions(cpu=1000, memory=10))
class Holder:
    def __init__(self, nbytes):
        self.array = np.arange(nbytes // 8, dtype=np.float64)

    def rank(self):
        from mpi4py import MPI

        return MPI.COMM_WORLD.Get_rank()

    def result(self):
        return self.array

    def raw_send(self):
        from mpi4py import MPI

        MPI.COMM_WORLD.Send(self.array, dest=0, tag=TAG)
        return True


def yr_job(out: str, rounds: int) -> None:
    from mpi4py import MPI

    yr.init()
    comm = MPI.COMM_WORLD
    h = Holder.invoke(NBYTES)
    host = yr.get(h.rank.invoke())
    expect = np.arange(NBYTES // 8, dtype=np.float64)
    buf = np.empty(NBYTES // 8, dtype=np.float64)

    def via_yr() -> float:
        start = time.perf_counter()
        value = yr.get(h.result.invoke())
        elapsed = time.perf_counter() - start
        assert value.nbytes == NBYTES and value[-1] == expect[-1]
        return elapsed

    def via_raw() -> float:
        start = time.perf_counter()
        ref = h.raw_send.invoke()
        comm.Recv(buf, source=host, tag=TAG)
        elapsed = time.perf_counter() - start
        yr.get(ref)
        assert buf[-1] == expect[-1]
        return elapsed

    def via_raw_fresh() -> float:
        start = time.perf_counter()
        ref = h.raw_send.invoke()
        fresh = np.empty(NBYTES // 8, dtype=np.float64)
        comm.Recv(fresh, source=host, tag=TAG)
        elapsed = time.perf_counter() - start
        yr.get(ref)
        assert fresh[-1] == expect[-1]
        return elapsed

    variants = {"yr_s": via_yr, "raw_s": via_raw, "raw_fresh_s": via_raw_fresh}
    for fn in variants.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(rounds):
        for name in (list(variants) if i % 2 == 0 else list(reversed(variants))):
            times[name].append(variants[name]())
    common.write_json(out, {"host": host, **times})
    yr.finalize()


def ray_job(out: str, rounds: int) -> None:
    import ray

    ray.init(num_cpus=2, log_to_driver=False)

    @ray.remote(num_cpus=1)
    class RayHolder:
        def __init__(self, nbytes):
            self.array = np.arange(nbytes // 8, dtype=np.float64)

        def result(self):
            return self.array

    a = RayHolder.remote(NBYTES)
    times = []
    for i in range(rounds + 1):
        start = time.perf_counter()
        value = ray.get(a.result.remote())
        elapsed = time.perf_counter() - start
        assert value.nbytes == NBYTES and value[-1] == NBYTES // 8 - 1
        del value
        if i:  # the first one warms up the actor and the object store
            times.append(elapsed)
    common.write_json(out, {"ray_s": times})
    ray.shutdown()


def run(quick: bool = False, with_ray: bool = True) -> dict:
    rounds = 3 if quick else 9
    script = Path(__file__).resolve()

    def cmd(out: str) -> list[str]:
        return common.yrmpi_run(3, script, ["--job", "yr", "--out", out, "--param", f"rounds={rounds}"])

    data, _ = common.run_json_job(cmd)
    tuned, _ = common.run_json_job(cmd, env=common.child_env(MALLOC_KEEP))
    mb = NBYTES / 1e6
    yr_bw = common.summary([mb / s for s in data["yr_s"]])
    raw_bw = common.summary([mb / s for s in data["raw_s"]])
    fresh_bw = common.summary([mb / s for s in data["raw_fresh_s"]])
    tuned_yr = common.summary([mb / s for s in tuned["yr_s"]])
    tuned_raw = common.summary([mb / s for s in tuned["raw_s"]])
    ray_bw = ray_data = None
    if with_ray and common.ray_available():
        ray_data, _ = common.run_json_job(lambda out: common.module_cmd(
            "benchmarks.transfer", ["--job", "ray", "--out", out, "--param", f"rounds={rounds}"]))
        ray_bw = common.summary([mb / s for s in ray_data["ray_s"]])
    no_ray = "skipped (ray not installed)" if not common.ray_available() else "skipped (--no-ray)"
    pairs = common.paired(data["raw_s"], data["yr_s"])  # time ratio raw/yr = bandwidth share
    share = pairs["median"]
    text = common.paired_text(pairs, "of raw bandwidth", "{:.0%}")
    vs_ray = common.ratio(yr_bw, ray_bw)
    if vs_ray is not None:
        text += f"; {vs_ray:.1f}x Ray"
    rows = [common.row(
        "result_100mb", "100 MB numpy result to driver (bandwidth)", "MB/s", yrmpi=yr_bw, raw=raw_bw, ray=ray_bw,
        raw_label="Send/Recv", ray_label="ray.get" if ray_bw else no_ray, ratio=share, ratio_text=text,
        target=">= 70% of raw bandwidth", met=share >= 0.70,
        note=f"raw receives into a buffer allocated once; raw into a new array each time (what yrmpi must do): "
             f"{common.fmt_stat(fresh_bw, 'MB/s')}")]
    tuned_pairs = common.paired(tuned["raw_s"], tuned["yr_s"])
    rows.append(common.row(
        "result_100mb_malloc", "same, glibc keeping freed memory (MALLOC_MMAP_THRESHOLD_=1 GiB)", "MB/s",
        yrmpi=tuned_yr, raw=tuned_raw, raw_label="Send/Recv", ray_label="n/a", ratio=tuned_pairs["median"],
        ratio_text=common.paired_text(tuned_pairs, "of raw bandwidth", "{:.0%}"), target="(diagnostic)", met=None,
        note="not the default: shows that the gap is page faults on freshly mapped memory, not the wire"))
    return {"name": "transfer", "rows": rows, "details": {"yr": data, "yr_malloc_keep": tuned, "ray": ray_data}}


def main(argv: list[str] | None = None) -> int:
    ns = common.job_args(argv, ("yr", "ray"))
    if ns.job:
        (yr_job if ns.job == "yr" else ray_job)(ns.out, int(ns.params["rounds"]))
        return 0
    return common.finish(run(ns.quick, not ns.no_ray), ns)


if __name__ == "__main__":
    sys.exit(main())
