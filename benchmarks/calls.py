"""1:1 instance calls: synchronous round trip and pipelined rate, vs raw mpi4py and Ray.

    python -m benchmarks.calls [--quick] [--no-ray]

yrmpi, in one job of N ranks (N = 3, then 17: 15 idle host ranks that must not spin):
- sync:      `yr.get(h.f.invoke())` in a loop, the instance on rank 1;
- pipelined: 1,000 `h.f.invoke()`, then one `yr.get` of all the refs;
- raw:       mpi4py pickled ping-pong (`comm.send`/`comm.recv` of a small tuple) on
             COMM_WORLD between the same two ranks, in the same job: the driver and the
             instance (which runs the pong loop inside a call).
Rounds of the three alternate, so load changes on the shared machine hit them alike.
Ray: one actor (`ray.init(num_cpus=2)`), `ray.get(a.f.remote())` in a loop, and 1,000
`a.f.remote()` then one `ray.get`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import yrmpi as yr
from benchmarks import common

TAG = 77
WARM = 50
BATCH = 1000


@yr.instance(invoke_options=yr.InvokeOptions(cpu=1000, memory=10))
class Echo:
    def rank(self):
        from mpi4py import MPI

        return MPI.COMM_WORLD.Get_rank()

    def f(self, x=None):
        return x

    def pong(self, n):
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
        for _ in range(n):
            comm.send(comm.recv(source=0, tag=TAG), dest=0, tag=TAG)
        return n


def _count_for(budget_s: float, per_call_s: float, lo: int = 100, hi: int = 200_000) -> int:
    return max(lo, min(hi, int(budget_s / max(per_call_s, 1e-7))))


def _yr_sync(h, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        yr.get(h.f.invoke())
    return (time.perf_counter() - start) / n


def _yr_pipelined(h) -> float:
    start = time.perf_counter()
    yr.get([h.f.invoke() for _ in range(BATCH)])
    return BATCH / (time.perf_counter() - start)


def _raw_pingpong(comm, h, host: int, n: int) -> float:
    ref = h.pong.invoke(n + WARM)
    msg = ("f", (), {})
    for _ in range(WARM):
        comm.send(msg, dest=host, tag=TAG)
        comm.recv(source=host, tag=TAG)
    start = time.perf_counter()
    for _ in range(n):
        comm.send(msg, dest=host, tag=TAG)
        comm.recv(source=host, tag=TAG)
    elapsed = time.perf_counter() - start
    yr.get(ref)
    return elapsed / n


def yr_job(out: str, rounds: int, budget: float, batches: int) -> None:
    from mpi4py import MPI

    yr.init()
    comm = MPI.COMM_WORLD
    h = Echo.invoke()
    host = yr.get(h.rank.invoke())
    n_sync = _count_for(budget, _yr_sync(h, 300))
    n_raw = _count_for(budget, _raw_pingpong(comm, h, host, 500))
    _yr_pipelined(h)
    sync, raw, pipelined = [], [], []
    for i in range(rounds):
        for kind in (("raw", "sync", "pipe") if i % 2 == 0 else ("pipe", "sync", "raw")):
            if kind == "raw":
                raw.append(_raw_pingpong(comm, h, host, n_raw))
            elif kind == "sync":
                _yr_sync(h, 20)  # the first call after a pause may meet a backed-off poller
                sync.append(_yr_sync(h, n_sync))
            else:
                pipelined.extend(_yr_pipelined(h) for _ in range(batches))
    common.write_json(out, {"ranks": comm.Get_size(), "host": host, "sync_s": sync, "raw_s": raw,
                            "pipelined_per_s": pipelined, "n_sync": n_sync, "n_raw": n_raw})
    yr.finalize()


def ray_job(out: str, rounds: int, budget: float, batches: int) -> None:
    import ray

    ray.init(num_cpus=2, log_to_driver=False)

    @ray.remote(num_cpus=1)
    class RayEcho:
        def f(self, x=None):
            return x

    a = RayEcho.remote()
    ray.get(a.f.remote())

    def sync(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            ray.get(a.f.remote())
        return (time.perf_counter() - start) / n

    def pipelined() -> float:
        start = time.perf_counter()
        ray.get([a.f.remote() for _ in range(BATCH)])
        return BATCH / (time.perf_counter() - start)

    n_sync = _count_for(budget, sync(100), lo=50)
    pipelined()
    sync_s, rates = [], []
    for _ in range(rounds):
        sync_s.append(sync(n_sync))
        rates.extend(pipelined() for _ in range(batches))
    common.write_json(out, {"sync_s": sync_s, "pipelined_per_s": rates, "n_sync": n_sync})
    ray.shutdown()


def run(quick: bool = False, with_ray: bool = True) -> dict:
    rounds, budget, batches = (2, 0.15, 2) if quick else (5, 0.3, 3)
    jobs = (3, 17) if quick else (3, 17, 3, 17)
    script = Path(__file__).resolve()
    params = ["--param", f"rounds={rounds}", "--param", f"budget={budget}", "--param", f"batches={batches}"]
    per_n: dict[int, dict] = {}
    for n in jobs:
        data, wall = common.run_json_job(lambda out, n=n: common.yrmpi_run(n, script, ["--job", "yr", "--out", out,
                                                                                     *params]))
        if data["host"] != 1:
            raise common.BenchError(f"the instance landed on rank {data['host']}, expected rank 1")
        acc = per_n.setdefault(n, {"sync_s": [], "raw_s": [], "pipelined_per_s": [], "job_wall_s": []})
        for key in ("sync_s", "raw_s", "pipelined_per_s"):
            acc[key].extend(data[key])
        acc["job_wall_s"].append(wall)
    ray_data = None
    if with_ray and common.ray_available():
        ray_data, _ = common.run_json_job(lambda out: common.module_cmd("benchmarks.calls", [
            "--job", "ray", "--out", out, "--param", f"rounds={rounds}", "--param", f"budget={budget}",
            "--param", f"batches={batches}"]))
    us = 1e6
    s3 = common.summary([v * us for v in per_n[3]["sync_s"]])
    r3 = common.summary([v * us for v in per_n[3]["raw_s"]])
    s17 = common.summary([v * us for v in per_n[17]["sync_s"]])
    r17 = common.summary([v * us for v in per_n[17]["raw_s"]])
    p3 = common.summary(per_n[3]["pipelined_per_s"])
    p17 = common.summary(per_n[17]["pipelined_per_s"])
    ray_sync = common.summary([v * us for v in ray_data["sync_s"]]) if ray_data else None
    ray_pipe = common.summary(ray_data["pipelined_per_s"]) if ray_data else None
    no_ray = "skipped (ray not installed)" if not common.ray_available() else "skipped (--no-ray)"

    pair3 = common.paired(per_n[3]["sync_s"], per_n[3]["raw_s"])
    pair17 = common.paired(per_n[17]["sync_s"], per_n[17]["raw_s"])
    vs_raw = pair3["median"]
    vs_ray = common.ratio(ray_sync, s3)
    ratio_text = common.paired_text(pair3, "raw")
    if vs_ray is not None:
        ratio_text += f"; {vs_ray:.0f}x faster than Ray"
    rows = [common.row(
        "sync_call_3", "synchronous 1:1 instance call round trip (3 ranks)", "us", yrmpi=s3, raw=r3, ray=ray_sync,
        raw_label="pickled ping-pong", ray_label="1:1 actor sync" if ray_sync else no_ray,
        ratio=vs_raw, ratio_text=ratio_text,
        target="within 5x of raw (issue 7: 10x); >= 20x faster than Ray",
        met=(vs_raw <= 5 and (vs_ray is None or vs_ray >= 20)))]
    keep = common.med(s3) / common.med(s17)
    rows.append(common.row(
        "sync_call_17", "same, 17 ranks (15 idle host ranks)", "us", yrmpi=s17, raw=r17,
        raw_label="pickled ping-pong", ray_label="n/a",
        ratio=keep, ratio_text=f"17-rank rate = {keep:.0%} of 3-rank rate; {common.paired_text(pair17, 'raw')}",
        target="17-rank rate >= 70% of 3-rank rate", met=keep >= 0.70))
    pipe_vs_ray = common.ratio(p3, ray_pipe)
    pipe_vs_raw = common.med(p3) / (1e6 / common.med(r3))
    text = f"{pipe_vs_ray:.0f}x Ray; " if pipe_vs_ray is not None else ""
    text += f"{pipe_vs_raw:.2f}x raw ping-pong rate"
    rows.append(common.row(
        "pipelined_calls", "pipelined instance calls/s (1,000 invokes, one get; 3 ranks)", "calls/s", yrmpi=p3,
        ray=ray_pipe, raw_label="n/a", ray_label="1:1 actor async" if ray_pipe else no_ray,
        ratio=pipe_vs_ray, ratio_text=text, target=">= 50,000/s and >= 15x Ray",
        met=(common.med(p3) >= 50_000 and (pipe_vs_ray is None or pipe_vs_ray >= 15)),
        note=f"at 17 ranks: {common.fmt_stat(p17, 'calls/s')}"))
    return {"name": "calls", "rows": rows, "details": {"per_ranks": per_n, "ray": ray_data, "paired_3": pair3,
                                                        "paired_17": pair17}}


def main(argv: list[str] | None = None) -> int:
    ns = common.job_args(argv, ("yr", "ray"))
    if ns.job:
        p = ns.params
        job = yr_job if ns.job == "yr" else ray_job
        job(ns.out, int(p["rounds"]), float(p["budget"]), int(p["batches"]))
        return 0
    return common.finish(run(ns.quick, not ns.no_ray), ns)


if __name__ == "__main__":
    sys.exit(main())
