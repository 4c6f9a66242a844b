"""Memory at idle: every process of a 9-rank yrmpi job vs a 9-CPU Ray instance.

    python -m benchmarks.memory [--quick] [--no-ray]

yrmpi: `python -m yrmpi run -n 9 benchmarks/memory.py` (the launcher process, mpiexec and
the 9 ranks); the driver calls `yr.init()`, makes one call on every host rank (so each has
served once, as in a real job), then idles. Ray: `ray.init(num_cpus=9)` in a driver process
(which starts the GCS, raylet, dashboard, agents, and prestarts 9 workers) and one call on an
actor, then idles. Over IDLE_S seconds of idling the CPU time of every process is summed
(/proc/PID/stat, 10 ms ticks); then the whole process tree under the spawned process is read
from /proc: RSS (what each process has resident, counting shared libraries
once per process, the number `ps` and Ray's dashboard show) and PSS (shared pages split
between the processes sharing them, so the sum is the real footprint).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yrmpi as yr
from benchmarks import common

IDLE_S = 5.0
RANKS = 9


@yr.instance(invoke_options=yr.InvokeOptions(cpu=1000, memory=10))
class Probe:
    def ping(self):
        return os.getpid()


def _idle_until(stop: str) -> None:
    print("IDLE", flush=True)
    while not os.path.exists(stop):
        time.sleep(0.2)


def yr_job(stop: str) -> None:
    yr.init()
    probes = [Probe.invoke() for _ in range(RANKS - 1)]
    assert len(set(yr.get([p.ping.invoke() for p in probes]))) == RANKS - 1
    _idle_until(stop)
    yr.finalize()


def ray_job(stop: str) -> None:
    import ray

    ray.init(num_cpus=RANKS, log_to_driver=False)

    @ray.remote(num_cpus=1)
    class RayProbe:
        def ping(self):
            return os.getpid()

    ray.get(RayProbe.remote().ping.remote())
    _idle_until(stop)
    ray.shutdown()


def measure(cmd_for) -> dict:
    """Spawn, wait for IDLE, idle IDLE_S more, read the process tree, tell it to stop."""
    with tempfile.TemporaryDirectory(prefix="yrmpi-bench-mem-") as tmp:
        stop = os.path.join(tmp, "stop")
        proc = subprocess.Popen(cmd_for(stop), cwd=common.REPO, env=common.child_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        try:
            for line in proc.stdout:  # blocking reads: no polling
                if line.strip() == "IDLE":
                    break
            else:
                raise common.BenchError(f"never went idle (exit {proc.wait()}): {' '.join(cmd_for(stop))}")
            cpu0, t0 = common.cpu_seconds(common.process_tree(proc.pid)), time.perf_counter()
            time.sleep(IDLE_S)
            used = common.cpu_used(cpu0, proc.pid)
            elapsed = time.perf_counter() - t0
            mem = common.tree_memory(proc.pid)
            mem["idle_cpu"] = sum(used.values()) / elapsed  # cores busy while idle (1.0 = one core)
            for p in mem["detail"]:
                p["idle_cpu"] = used.get(p["pid"], 0.0) / elapsed
            Path(stop).touch()
            proc.stdout.read()
            if proc.wait(timeout=120) != 0:
                raise common.BenchError(f"exit code {proc.returncode}: {' '.join(cmd_for(stop))}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return mem


def run(quick: bool = False, with_ray: bool = True) -> dict:
    reps = 1 if quick else 2
    script = Path(__file__).resolve()
    yr_mem, ray_mem = [], []
    use_ray = with_ray and common.ray_available()
    for _ in range(reps):
        yr_mem.append(measure(lambda stop: common.yrmpi_run(RANKS, script, ["--job", "yr", "--param", f"stop={stop}"])))
        if use_ray:
            ray_mem.append(measure(lambda stop: common.module_cmd("benchmarks.memory", [
                "--job", "ray", "--param", f"stop={stop}"])))
    no_ray = "skipped (ray not installed)" if not common.ray_available() else "skipped (--no-ray)"
    rows = []
    for kind in ("pss_mb", "rss_mb"):
        y = common.summary([m[kind] for m in yr_mem])
        r = common.summary([m[kind] for m in ray_mem]) if ray_mem else None
        smaller = common.ratio(r, y)
        name = "PSS (shared pages split)" if kind == "pss_mb" else "RSS (summed per process)"
        rows.append(common.row(
            f"memory_{kind[:3]}", f"memory at idle, total {name}: 9-rank job vs 9-CPU Ray", "MB", yrmpi=y, ray=r,
            raw_label="n/a", ray_label="ray.init(num_cpus=9)" if r else no_ray, ratio=smaller,
            ratio_text=f"{smaller:.1f}x smaller than Ray" if smaller else "-", target="(reported)", met=None,
            note=(f"processes: yrmpi {yr_mem[0]['processes']} (launcher, mpiexec, {RANKS} ranks)"
                  + (f", Ray {ray_mem[0]['processes']}" if ray_mem else "")) if kind == "pss_mb" else ""))
    y = common.summary([m["idle_cpu"] * 100 for m in yr_mem])
    r = common.summary([m["idle_cpu"] * 100 for m in ray_mem]) if ray_mem else None
    rows.append(common.row(
        "idle_cpu", f"CPU used at idle over {IDLE_S:g} s, all processes (% of one core)", "%", yrmpi=y, ray=r,
        raw_label="n/a", ray_label="ray.init(num_cpus=9)" if r else no_ray, ratio=common.ratio(y, r),
        ratio_text=f"yrmpi uses {common.ratio(y, r):.1f}x Ray's" if r and common.med(r) else "-",
        target="(reported)", met=None))
    return {"name": "memory", "rows": rows, "details": {"yr": yr_mem, "ray": ray_mem}}


def main(argv: list[str] | None = None) -> int:
    ns = common.job_args(argv, ("yr", "ray"))
    if ns.job:
        (yr_job if ns.job == "yr" else ray_job)(ns.params["stop"])
        return 0
    return common.finish(run(ns.quick, not ns.no_ray), ns)


if __name__ == "__main__":
    sys.exit(main())
