"""PyTorch through yrmpi, side by side with its baselines in one run.

    python -m benchmarks.torch_speed [--quick]

- allreduce of a 16 MB float32 CPU tensor vs the same data as a numpy array (`t.numpy()`, the
  tensor's memory), both through `yr.collective.allreduce(x, out=x)` (and without `out=`), 4
  workers one per rank (5 ranks); rounds of the variants alternate. Target: tensor within 1.10x
  of numpy. The note compares with an array that numpy allocated itself, and raw mpi4py
  `Allreduce` on both memories: on this machine MPI is slower on torch's allocation than on
  numpy's by about as much, with or without yrmpi.
- a 100 MB float32 tensor returned to the driver (`yr.get(h.result.invoke())`, out of band)
  vs raw mpi4py `Send`/`Recv` of the same bytes between the same ranks into a buffer allocated
  once (3 ranks; rounds alternate). Target: at least 70% of raw bandwidth.
- one epoch of DistributedDataParallel (gloo) over `yrmpi.torch` vs the same script under
  `torchrun --nproc_per_node=3` (its own rendezvous port on localhost), 3 workers, one thread
  each: an MLP 256-1024-1024-10 (about 1.3 M parameters) on 6,000 synthetic samples, batch 100
  per worker (20 steps an epoch), a warm-up epoch first; launches of the two alternate and the
  ratio pairs their median epochs. Target: within 1.10x.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

import yrmpi as yr
from benchmarks import common

TAG = 79
RESULT_BYTES = 100_000_000
ALLREDUCE_BYTES = 16 * 1024 * 1024
WORKERS = 4
DDP_WORKERS = 3


# -- allreduce: tensor vs numpy -------------------------------------------------------------------
@yr.instance(invoke_options=yr.InvokeOptions(cpu=1000, memory=10))
class Reducer:
    def loop(self, rounds: int, per_round: int) -> dict:
        import torch
        from mpi4py import MPI

        comm = yr.collective.comm()  # (one member per rank) for the raw rows
        n = ALLREDUCE_BYTES // 4
        a = np.ones(n, dtype=np.float32)  # numpy's own memory
        t = torch.ones(n, dtype=torch.float32)
        tv = t.numpy()  # the same data as a numpy array: the tensor's memory
        ca, ct = np.ones(n, dtype=np.float32), torch.ones(n, dtype=torch.float32)
        ctv = ct.numpy()
        variants = {
            "tensor_out": lambda: yr.collective.allreduce(t, out=t),
            "view_out": lambda: yr.collective.allreduce(tv, out=tv),
            "numpy_out": lambda: yr.collective.allreduce(a, out=a),
            "tensor_new": lambda: yr.collective.allreduce(ct),
            "view_new": lambda: yr.collective.allreduce(ctv),
            "numpy_new": lambda: yr.collective.allreduce(ca),
            "raw_tensor": lambda: comm.Allreduce(MPI.IN_PLACE, tv, MPI.SUM),
            "raw_numpy": lambda: comm.Allreduce(MPI.IN_PLACE, a, MPI.SUM),
        }
        for fn in variants.values():  # warm up every signature
            fn()
        times: dict[str, list[float]] = {k: [] for k in variants}
        for i in range(rounds):
            for name in (list(variants) if i % 2 == 0 else list(reversed(variants))):
                yr.collective.barrier()
                start = time.perf_counter()
                for _ in range(per_round):
                    variants[name]()
                times[name].append((time.perf_counter() - start) / per_round)
        return times


def allreduce_job(out: str, rounds: int) -> None:
    yr.init()
    rs = [Reducer.invoke() for _ in range(WORKERS)]
    results = yr.get([r.loop.invoke(rounds, 5) for r in rs], timeout=600)
    # the slowest member's time per round is the collective's time
    times = {k: [max(r[k][i] for r in results) for i in range(rounds)] for k in results[0]}
    common.write_json(out, times)
    yr.finalize()


# -- a 100 MB tensor result -----------------------------------------------------------------------
@yr.instance(invoke_options=yr.InvokeOptions(cpu=1000, memory=10))
class Holder:
    def __init__(self) -> None:
        import torch

        self.tensor = torch.arange(RESULT_BYTES // 4, dtype=torch.float32)
        self.array = self.tensor.numpy()

    def rank(self) -> int:
        from mpi4py import MPI

        return MPI.COMM_WORLD.Get_rank()

    def result(self):
        return self.tensor

    def result_numpy(self):
        return self.array

    def raw_send(self) -> bool:
        from mpi4py import MPI

        MPI.COMM_WORLD.Send(self.array, dest=0, tag=TAG)
        return True


def result_job(out: str, rounds: int) -> None:
    import torch
    from mpi4py import MPI

    yr.init()
    comm = MPI.COMM_WORLD
    h = Holder.invoke()
    host = yr.get(h.rank.invoke())
    buf = np.empty(RESULT_BYTES // 4, dtype=np.float32)
    last = float(np.float32(RESULT_BYTES // 4 - 1))  # (as float32 holds it)

    def via_tensor() -> float:
        start = time.perf_counter()
        value = yr.get(h.result.invoke())
        elapsed = time.perf_counter() - start
        assert isinstance(value, torch.Tensor) and value.numel() * 4 == RESULT_BYTES and float(value[-1]) == last
        return elapsed

    def via_numpy() -> float:
        start = time.perf_counter()
        value = yr.get(h.result_numpy.invoke())
        elapsed = time.perf_counter() - start
        assert value.nbytes == RESULT_BYTES and value[-1] == last
        return elapsed

    def via_raw() -> float:
        start = time.perf_counter()
        ref = h.raw_send.invoke()
        comm.Recv(buf, source=host, tag=TAG)
        elapsed = time.perf_counter() - start
        yr.get(ref)
        assert buf[-1] == last
        return elapsed

    variants = {"tensor_s": via_tensor, "numpy_s": via_numpy, "raw_s": via_raw}
    for fn in variants.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(rounds):
        for name in (list(variants) if i % 2 == 0 else list(reversed(variants))):
            times[name].append(variants[name]())
    common.write_json(out, times)
    yr.finalize()


# -- one DDP epoch: yrmpi.torch vs torchrun ---------------------------------------------------------
def ddp_epochs(pg, rank: int, size: int, epochs: int) -> list[float]:
    """The same training under either launcher: `pg` is the process group to use."""
    import torch
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DataLoader, TensorDataset
    from torch.utils.data.distributed import DistributedSampler

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6000, 256, generator=g)
    y = torch.randint(0, 10, (6000,), generator=g)
    data = TensorDataset(x, y)
    sampler = DistributedSampler(data, num_replicas=size, rank=rank, shuffle=True, seed=0)
    loader = DataLoader(data, batch_size=100, sampler=sampler)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 1024),
                                torch.nn.ReLU(), torch.nn.Linear(1024, 10))
    ddp = DistributedDataParallel(model, process_group=pg)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01)
    times = []
    for epoch in range(epochs + 1):  # the first one warms up
        sampler.set_epoch(epoch)
        torch.distributed.barrier(group=pg) if pg is not None else None
        start = time.perf_counter()
        for xb, yb in loader:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(ddp(xb), yb).backward()
            opt.step()
        times.append(time.perf_counter() - start)
    return times[1:]


@yr.instance(invoke_options=yr.InvokeOptions(cpu=1000, memory=500))
class DDPWorker:
    def run(self, epochs: int) -> list[float]:
        import yrmpi.torch as yt

        pg = yt.process_group()
        return ddp_epochs(pg, pg.rank(), pg.size(), epochs)


def ddp_yr_job(out: str, epochs: int) -> None:
    yr.init()
    ws = [DDPWorker.invoke() for _ in range(DDP_WORKERS)]
    results = yr.get([w.run.invoke(epochs) for w in ws], timeout=900)
    common.write_json(out, {"epoch_s": [max(r[i] for r in results) for i in range(epochs)]})
    yr.finalize()


def ddp_torchrun_job(out: str, epochs: int) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo")
    times = ddp_epochs(dist.group.WORLD, dist.get_rank(), dist.get_world_size(), epochs)
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, times)
    if dist.get_rank() == 0:
        common.write_json(out, {"epoch_s": [max(t[i] for t in gathered) for i in range(epochs)]})
    dist.destroy_process_group()


def _torchrun() -> str:
    beside = Path(sys.executable).parent / "torchrun"
    return str(beside) if beside.exists() else (shutil.which("torchrun") or "torchrun")


def run(quick: bool = False, with_ray: bool = True) -> dict:
    script = Path(__file__).resolve()
    rounds = 3 if quick else 9
    epochs = 2 if quick else 3
    launches = 2 if quick else 4

    def job(kind: str, n: int, param: str):
        return lambda out: common.yrmpi_run(n, script, ["--job", kind, "--out", out, "--param", param])

    ar, _ = common.run_json_job(job("allreduce", WORKERS + 1, f"rounds={rounds}"), timeout=900)
    res, _ = common.run_json_job(job("result", 3, f"rounds={rounds}"), timeout=900)
    env = common.child_env({"OMP_NUM_THREADS": "1"})
    ddp_yr: dict = {"epoch_s": [], "launch_median_s": []}
    ddp_tr: dict = {"epoch_s": [], "launch_median_s": []}
    for i in range(launches):  # launches alternate, so load changes hit both alike
        order = ("yr", "torchrun") if i % 2 == 0 else ("torchrun", "yr")
        for which in order:
            if which == "yr":
                got, _ = common.run_json_job(job("ddp_yr", DDP_WORKERS + 1, f"epochs={epochs}"), timeout=900)
                into = ddp_yr
            else:
                got, _ = common.run_json_job(lambda out: [
                    _torchrun(), "--standalone", f"--nproc_per_node={DDP_WORKERS}", str(script), "--job",
                    "ddp_torchrun", "--out", out, "--param", f"epochs={epochs}"], timeout=900, env=env)
                into = ddp_tr
            into["epoch_s"] += got["epoch_s"]
            into["launch_median_s"].append(common.summary(got["epoch_s"])["median"])

    rows = []
    for suffix, what in (("out", "allreduce(x, out=x)"), ("new", "allreduce(x)")):
        pairs = common.paired(ar[f"tensor_{suffix}"], ar[f"view_{suffix}"])
        rows.append(common.row(
            f"torch_allreduce_16mb_{suffix}", f"{what} of a 16 MB float32 CPU tensor vs the same data as numpy "
            f"({WORKERS} workers)", "ms", yrmpi=common.summary([1e3 * s for s in ar[f"tensor_{suffix}"]]),
            raw=common.summary([1e3 * s for s in ar[f"view_{suffix}"]]), raw_label="t.numpy() through yrmpi",
            ray_label="n/a", ratio=pairs["median"], ratio_text=common.paired_text(pairs, "numpy's time"),
            target="within 1.10x of numpy", met=pairs["median"] <= 1.10,
            note=_numpy_memory_note(ar, suffix)))
    mb = RESULT_BYTES / 1e6
    numpy_bw = common.fmt_stat(common.summary([mb / s for s in res["numpy_s"]]), "MB/s")
    pairs = common.paired(res["raw_s"], res["tensor_s"])
    rows.append(common.row(
        "torch_result_100mb", "100 MB float32 tensor result to the driver (bandwidth)", "MB/s",
        yrmpi=common.summary([mb / s for s in res["tensor_s"]]), raw=common.summary([mb / s for s in res["raw_s"]]),
        raw_label="Send/Recv", ray_label="n/a", ratio=pairs["median"],
        ratio_text=common.paired_text(pairs, "of raw bandwidth", "{:.0%}"), target=">= 70% of raw bandwidth",
        met=pairs["median"] >= 0.70,
        note=f"the same bytes as a numpy result: {numpy_bw}"))
    pairs = common.paired(ddp_yr["launch_median_s"], ddp_tr["launch_median_s"])
    rows.append(common.row(
        "torch_ddp_epoch", f"one DDP epoch (gloo, {DDP_WORKERS} workers): yrmpi.torch vs torchrun", "s",
        yrmpi=common.summary(ddp_yr["epoch_s"]), raw=common.summary(ddp_tr["epoch_s"]), raw_label="torchrun",
        ray_label="n/a", ratio=pairs["median"], ratio_text=common.paired_text(pairs, "torchrun's epoch", "{:.2f}x"),
        target="within 1.10x", met=pairs["median"] <= 1.10,
        note=f"{launches} launches of each, alternating; pairs are the launches' median epochs"))
    return {"name": "torch_speed", "rows": rows,
            "details": {"allreduce": ar, "result": res, "ddp_yrmpi": ddp_yr, "ddp_torchrun": ddp_tr,
                        "load_average": os.getloadavg()[0]}}


def _numpy_memory_note(ar: dict, suffix: str) -> str:
    """The same call on an array numpy allocated itself, and raw MPI on both memories: the gap
    between torch's and numpy's allocations is the memory's, raw MPI shows it too."""
    own = common.paired(ar[f"tensor_{suffix}"], ar[f"numpy_{suffix}"])
    raw = common.paired(ar["raw_tensor"], ar["raw_numpy"])
    return (f"vs an array numpy allocated: {common.paired_text(own, 'its time')}; raw mpi4py Allreduce on the "
            f"tensor's memory vs numpy's: {common.paired_text(raw, 'its time')}")


def main(argv: list[str] | None = None) -> int:
    ns = common.job_args(argv, ("allreduce", "result", "ddp_yr", "ddp_torchrun"))
    if ns.job:
        jobs = {"allreduce": (allreduce_job, "rounds"), "result": (result_job, "rounds"),
                "ddp_yr": (ddp_yr_job, "epochs"), "ddp_torchrun": (ddp_torchrun_job, "epochs")}
        fn, key = jobs[ns.job]
        fn(ns.out, int(ns.params[key]))
        return 0
    return common.finish(run(ns.quick, not ns.no_ray), ns)


if __name__ == "__main__":
    sys.exit(main())
