"""The same actor-tree program under Ray and under yrmpi.ray, side by side in one run.

    python -m benchmarks.ray_adapter [--quick]

One source: the program below picks `import ray` or `import yrmpi.ray as ray` from its
command line and does the same thing under both. It runs as a child process of this script:
`python benchmarks/ray_adapter.py --child ray` (Ray's `ray.init(num_cpus=8)` starts a local Ray)
and `python -m yrmpi benchmarks/ray_adapter.py --child yrmpi` (9 ranks). Measured:

- job start: from launching the process to the first result of the tree (2 supervisors, each
  with 3 trainers, Ray's "tree of actors" pattern), everything included (interpreter, runtime
  start, creations, calls);
- synchronous calls: `ray.get(actor.ping.remote())` in a loop, microseconds per call;
- pipelined calls: `ray.get([actor.ping.remote() for ...])`, calls per second;
- create + end: actors created, called once and killed, per second.

Ratios are Ray / yrmpi.ray for times and yrmpi.ray / Ray for rates (> 1: yrmpi.ray is faster).
Ray is the `ray` (or `bench`) extra; without it only the yrmpi.ray side runs.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()


def program(which: str, quick: bool) -> dict:
    ray = importlib.import_module("ray" if which == "ray" else "yrmpi.ray")

    @ray.remote(num_cpus=1)
    class Trainer:
        def __init__(self, hyperparameter, data):
            self.hyperparameter = hyperparameter
            self.data = data

        def fit(self):
            return self.data * self.hyperparameter

    @ray.remote(num_cpus=1)
    class Supervisor:
        def __init__(self, hyperparameter, data):
            self.trainers = [Trainer.remote(hyperparameter, d) for d in data]

        def fit(self):
            return ray.get([t.fit.remote() for t in self.trainers])

    @ray.remote
    class Pinger:
        def ping(self):
            return 1

    ray.init(num_cpus=8, **({"include_dashboard": False, "log_to_driver": False} if which == "ray" else {}))
    sups = [Supervisor.remote(h, [1, 2, 3]) for h in (1, 2)]
    assert ray.get([s.fit.remote() for s in sups]) == [[1, 2, 3], [2, 4, 6]]
    first = time.time()
    del sups

    p = Pinger.remote()
    ray.get(p.ping.remote())
    n_sync = 300 if quick else 2000
    for _ in range(50):
        ray.get(p.ping.remote())
    t0 = time.perf_counter()
    for _ in range(n_sync):
        ray.get(p.ping.remote())
    sync_us = (time.perf_counter() - t0) / n_sync * 1e6

    n_pipe = 2000 if quick else 10000
    t0 = time.perf_counter()
    assert sum(ray.get([p.ping.remote() for _ in range(n_pipe)])) == n_pipe
    pipelined = n_pipe / (time.perf_counter() - t0)

    n_create = 10 if quick else 30
    t0 = time.perf_counter()
    for _ in range(n_create):
        a = Pinger.remote()
        ray.get(a.ping.remote())
        ray.kill(a)
    create_end = n_create / (time.perf_counter() - t0)
    ray.shutdown()
    return {"first_result": first, "sync_us": sync_us, "pipelined_per_s": pipelined, "create_end_per_s": create_end}


def run_side(which: str, quick: bool) -> dict | None:
    env = dict(os.environ, RAY_AUTH_MODE=os.environ.get("RAY_AUTH_MODE", "disabled"))
    env.pop("YRMPI_NUM_RANKS", None)
    child = [str(HERE), "--child", which] + (["--quick"] if quick else [])
    cmd = [sys.executable, *child] if which == "ray" else [sys.executable, "-m", "yrmpi", *child]
    start = time.time()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, cwd=HERE.parent.parent)
    lines = [line for line in res.stdout.splitlines() if line.startswith("RESULT ")]
    if res.returncode != 0 or not lines:
        print(f"{which} side failed (code {res.returncode}):\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}",
              file=sys.stderr)
        return None
    out = json.loads(lines[-1][len("RESULT "):])
    out["job_start_s"] = out.pop("first_result") - start
    return out


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f} {unit}" if value >= 100 else f"{value:.2f} {unit}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", choices=("ray", "yrmpi"))
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(program(args.child, args.quick)), flush=True)
        return
    try:
        importlib.import_module("ray")
        have_ray = True
    except ImportError:
        have_ray = False
    mine = run_side("yrmpi", args.quick)
    theirs = run_side("ray", args.quick) if have_ray else None
    rows = [("job start to first result (actor tree)", "job_start_s", "s", False),
            ("synchronous actor call", "sync_us", "us", False),
            ("pipelined actor calls", "pipelined_per_s", "/s", True),
            ("create + call + kill an actor", "create_end_per_s", "/s", True)]
    print("| benchmark | yrmpi.ray | Ray | yrmpi.ray vs Ray |")
    print("| --- | --- | --- | --- |")
    for label, key, unit, higher_better in rows:
        a = mine[key] if mine else None
        b = theirs[key] if theirs else None
        ratio = "-"
        if a and b:
            r = a / b if higher_better else b / a
            ratio = f"{r:.1f}x faster" if r >= 1 else f"{1 / r:.1f}x slower"
        print(f"| {label} | {_fmt(a, unit)} | {_fmt(b, unit) if have_ray else 'not installed'} | {ratio} |")
    if not have_ray:
        print("(Ray is not installed: pip install -e '.[ray]' for the side-by-side)")


if __name__ == "__main__":
    main()
