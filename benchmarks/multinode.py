"""Across two nodes: a call round trip and a group allreduce between nodes, vs raw mpi4py on the
same ranks.

    python -m benchmarks.multinode [--quick] [--json FILE]      # root, iproute2, util-linux

Makes a 2-node testbed (tests/multinode/testbed.py: network namespaces joined by veth pairs
through a bridge, Open MPI over TCP between them) and runs one job of 3 ranks in it,
`yrmpi run -n 3 --host nodea:2,nodeb:1`: the driver (rank 0) and a worker on nodea (rank 1),
a worker on nodeb (rank 2); the two workers (`cpu=1000`, one per rank) are the driver's group.
Alternating rounds in that job, so load on the shared machine hits both sides alike:
- call:      `yr.get(h.f.invoke())` from the driver (nodea) to the worker on nodeb, vs mpi4py
             pickled ping-pong (`comm.send`/`comm.recv` of a small tuple) between the same two
             ranks on COMM_WORLD (the worker runs the pong loop inside a call);
- allreduce: `yr.collective.allreduce(x, out=out)` of float32 arrays (1 KB, 1 MB, 16 MB) in the
             2-member group (one member per node) vs blocking `Allreduce` on a communicator of
             the same two ranks that the members carve from COMM_WORLD themselves
             (`Create_group`); a time is the slower member's mean per call in a batch.
The testbed is always taken down. Where it cannot be made (not root, no `ip netns`), `run`
returns no rows and the reason (`skipped`). The links are veth pairs in one machine: the numbers
measure the software path over TCP, not a network.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import sys
import time
from pathlib import Path

import numpy as np

import yrmpi as yr
from benchmarks import common
from benchmarks.calls import TAG, _count_for, _raw_pingpong, _yr_sync  # the same measurement as benchmarks/calls.py

TESTBED = common.REPO / "tests" / "multinode" / "testbed.py"
GROUP_TAG = 79
SIZES = {"1 KB": 1 << 10, "1 MB": 1 << 20, "16 MB": 16 << 20}


@yr.instance(invoke_options=yr.InvokeOptions(cpu=1000, memory=10))
class Worker:
    def where(self):
        from mpi4py import MPI

        return MPI.COMM_WORLD.Get_rank(), socket.gethostname()

    def f(self, x=None):
        return x

    def pong(self, n):
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
        for _ in range(n):
            comm.send(comm.recv(source=0, tag=TAG), dest=0, tag=TAG)
        return n

    def allreduce(self, ranks: list[int], nbytes: int, rounds: int, budget_s: float) -> dict:
        """Per round, the slower member's mean seconds per call of raw `Allreduce` and of
        `yr.collective.allreduce(x, out=out)`, in batches of the same size, their order swapped
        every round."""
        from mpi4py import MPI

        world = MPI.COMM_WORLD
        raw = world.Create_group(world.Get_group().Incl(sorted(ranks)), GROUP_TAG)
        try:
            x = np.ones(nbytes // 4, dtype=np.float32)
            out = np.empty_like(x)
            variants = {"raw": lambda: raw.Allreduce(x, out, MPI.SUM),
                        "yr": lambda: yr.collective.allreduce(x, out=out)}
            for fn in variants.values():  # first-use checks, page faults, persistent requests
                fn()
                fn()
            raw.Barrier()
            start = time.perf_counter()
            variants["raw"]()
            one = raw.allreduce(time.perf_counter() - start, op=MPI.MAX)
            reps = max(1, min(5000, int(budget_s / max(one, 1e-6))))
            times: dict[str, list[float]] = {name: [] for name in variants}
            for i in range(rounds):
                for name in (("raw", "yr") if i % 2 == 0 else ("yr", "raw")):
                    fn = variants[name]
                    raw.Barrier()
                    start = time.perf_counter()
                    for _ in range(reps):
                        fn()
                    times[name].append(raw.allreduce(time.perf_counter() - start, op=MPI.MAX) / reps)
            if not np.all(out == raw.Get_size()):
                raise AssertionError("wrong allreduce result")
            return times | {"reps": reps}
        finally:
            raw.Free()


def yr_job(out: str, rounds: int, budget: float, ar_rounds: int, ar_budget: float) -> None:
    from mpi4py import MPI

    yr.init()
    comm = MPI.COMM_WORLD
    workers = [Worker.invoke() for _ in range(2)]
    where = yr.get([w.where.invoke() for w in workers])
    driver_host = socket.gethostname()
    local = [i for i, (_, host) in enumerate(where) if host == driver_host]
    remote = [i for i, (_, host) in enumerate(where) if host != driver_host]
    if len(local) != 1 or len(remote) != 1:
        raise RuntimeError(f"expected one worker on the driver's node {driver_host} and one on another: {where}")
    h = workers[remote[0]]
    host = where[remote[0]][0]
    n_sync = _count_for(budget, _yr_sync(h, 300))
    n_raw = _count_for(budget, _raw_pingpong(comm, h, host, 500))
    sync, raw = [], []
    for i in range(rounds):
        for kind in (("raw", "yr") if i % 2 == 0 else ("yr", "raw")):
            if kind == "raw":
                raw.append(_raw_pingpong(comm, h, host, n_raw))
            else:
                _yr_sync(h, 20)  # the first call after a pause may meet a backed-off poller
                sync.append(_yr_sync(h, n_sync))
    ranks = [r for r, _ in where]
    allreduce = {}
    for label, nbytes in SIZES.items():
        rows = yr.get([w.allreduce.invoke(ranks, nbytes, ar_rounds, ar_budget) for w in workers], timeout=1800)
        allreduce[label] = rows[0]
    common.write_json(out, {"ranks": comm.Get_size(), "placement": {"driver": [0, driver_host], "workers": where},
                            "sync_s": sync, "raw_s": raw, "n_sync": n_sync, "n_raw": n_raw,
                            "allreduce": allreduce, "load": os.getloadavg()[0]})
    yr.finalize()


def _load_testbed():
    spec = importlib.util.spec_from_file_location("yrmpi_testbed", TESTBED)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fmt_s(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f} us" if seconds < 1e-3 else f"{seconds * 1e3:,.2f} ms"


def run(quick: bool = False, with_ray: bool = True) -> dict:
    rounds, budget, ar_rounds, ar_budget = (4, 0.15, 4, 0.1) if quick else (10, 0.3, 10, 0.25)
    testbed = _load_testbed()
    try:
        bed = testbed.Testbed(2)
    except testbed.TestbedUnavailable as exc:
        return {"name": "multinode", "rows": [], "skipped": f"no multi-node testbed here: {exc}"}
    hosts = f"{bed.nodes[0]}:2,{bed.nodes[1]}:1"
    out = bed.state / "multinode.json"  # /run is shared by every node; /tmp is not
    cmd = ["yrmpi", "run", "-n", "3", "--host", hosts, str(Path(__file__).resolve()), "--job", "yr",
           "--out", str(out), "--param", f"rounds={rounds}", "--param", f"budget={budget}",
           "--param", f"ar_rounds={ar_rounds}", "--param", f"ar_budget={ar_budget}"]
    load_before = common.load_average()
    try:
        start = time.perf_counter()
        rc, output = bed.run(cmd, timeout=common.JOB_TIMEOUT_S)
        wall = time.perf_counter() - start
        if rc != 0 or not out.exists():
            raise common.BenchError(f"exit code {rc}: {' '.join(cmd)}\n{common._tail(output, 40)}")
        data = json.loads(out.read_text())
    finally:
        bed.down()
    data["job_wall_s"] = wall
    data["load_before"], data["load_after"] = load_before, common.load_average()
    data["command"] = f"yrmpi run -n 3 --host {hosts} benchmarks/multinode.py"
    return {"name": "multinode", "rows": _rows(data), "details": data, "extra_md": _extra(data)}


def _rows(data: dict) -> list[dict]:
    us, ms = 1e6, 1e3
    sync = common.summary([v * us for v in data["sync_s"]])
    raw = common.summary([v * us for v in data["raw_s"]])
    pair = common.paired(data["sync_s"], data["raw_s"])
    rows = [common.row(
        "multinode_sync_call", "synchronous call round trip, driver (nodea) -> instance (nodeb), veth + TCP", "us",
        yrmpi=sync, raw=raw, raw_label="pickled ping-pong, same ranks", ray_label="n/a", ratio=pair["median"],
        ratio_text=common.paired_text(pair, "raw"), target="(reported)",
        note=f"{data['n_sync']} yrmpi calls / {data['n_raw']} ping-pongs per round")]
    for label, times in data["allreduce"].items():
        scale, unit = (us, "us") if label == "1 KB" else (ms, "ms")
        pair = common.paired(times["yr"], times["raw"])
        rows.append(common.row(
            f"multinode_allreduce_{label.replace(' ', '').lower()}",
            f"group allreduce {label} (float32), 2 workers on 2 nodes, slower member", unit,
            yrmpi=common.summary([v * scale for v in times["yr"]]),
            raw=common.summary([v * scale for v in times["raw"]]), raw_label="Allreduce on same ranks",
            ray_label="n/a", ratio=pair["median"], ratio_text=common.paired_text(pair, "raw", "{:.2f}x"),
            target="(reported)", note=f"{times['reps']} operations per timed batch"))
    return rows


def _extra(data: dict) -> str:
    lines = [f"`{data['command']}`: driver rank 0 on nodea, workers at (rank, node) {data['placement']['workers']}. "
             "The nodes are network namespaces joined by veth pairs through a bridge on one machine: the numbers "
             "measure the software path over TCP, not a network. 1-minute load average "
             f"{data['load_before']:.1f} before, {data['load_after']:.1f} after ({os.cpu_count()} cores).", "",
             "| measurement | raw mpi4py | yrmpi | ratio (median of pairs) |", "| --- | --- | --- | --- |"]
    sync_pair = common.paired(data["sync_s"], data["raw_s"])
    med = common.summary
    lines.append(f"| call round trip nodea -> nodeb | {_fmt_s(med(data['raw_s'])['median'])} "
                 f"| {_fmt_s(med(data['sync_s'])['median'])} | {common.paired_text(sync_pair, 'raw')} |")
    for label, times in data["allreduce"].items():
        pair = common.paired(times["yr"], times["raw"])
        lines.append(f"| allreduce {label} | {_fmt_s(med(times['raw'])['median'])} "
                     f"| {_fmt_s(med(times['yr'])['median'])} | {common.paired_text(pair, 'raw', '{:.2f}x')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ns = common.job_args(argv, ("yr",))
    if ns.job:
        p = ns.params
        yr_job(ns.out, int(p["rounds"]), float(p["budget"]), int(p["ar_rounds"]), float(p["ar_budget"]))
        return 0
    result = run(ns.quick, not ns.no_ray)
    if result.get("skipped"):
        print(f"multinode: skipped: {result['skipped']}")
        return 0
    print(result["extra_md"])
    print()
    return common.finish(result, ns)


if __name__ == "__main__":
    sys.exit(main())
