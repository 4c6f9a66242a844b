"""PyTorch on real ranks (the checks in tests/jobs/torch_checks.py, one launch), GPU capacity and
binding from the variables and tools a GPU node has (this machine has no GPU), real-GPU tests
(marked `gpu`: they run where torch.cuda.is_available()), and the example sweep."""

from __future__ import annotations

import csv
import json

import pytest
from conftest import ROOT, assert_check, check_names, job_env, parse_checks, run_yrmpi

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.mpi]

CHECKS_SCRIPT = ROOT / "tests" / "jobs" / "torch_checks.py"
CHECK_NAMES = [n for n in check_names(CHECKS_SCRIPT) if n != "gpus_detected_shared_and_bound"]
CAPACITY = {"YRMPI_CPU_PER_RANK": "2000", "YRMPI_RESOURCES": json.dumps({"ga": 1, "gb": 1})}


@pytest.fixture(scope="module")
def torch_run():
    """One job on 4 ranks (3 hosts of 2000 millicores) runs every check in order."""
    proc = run_yrmpi(["run", "-n", "4", str(CHECKS_SCRIPT), *CHECK_NAMES], timeout=300, env=job_env(**CAPACITY))
    return proc, parse_checks(proc)


@pytest.mark.parametrize("name", CHECK_NAMES)
def test_torch_check(torch_run, name):
    assert_check(*torch_run, name)


def test_torch_checks_ran_in_one_clean_job(torch_run):
    proc, results = torch_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(results) == CHECK_NAMES, list(results)
    assert "terminate called" not in proc.stderr, proc.stderr[-3000:]


def _gpu_launch(tmp_path, **env):
    proc = run_yrmpi(["run", "-n", "4", str(CHECKS_SCRIPT), "gpus_detected_shared_and_bound"], timeout=180,
                     env=job_env(**CAPACITY, TORCH_CHECKS_GPUS="0,1", **env))
    results = parse_checks(proc)
    assert_check(proc, results, "gpus_detected_shared_and_bound")
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_gpus_from_cuda_visible_devices(tmp_path):
    """CUDA_VISIBLE_DEVICES=0,1 on a node of 3 host ranks: ranks 1 and 2 get one GPU each (and see
    only it), rank 3 none; the capacities count them; an instance with gpu=1 lands on 1 or 2."""
    _gpu_launch(tmp_path, CUDA_VISIBLE_DEVICES="0,1")


def test_gpus_from_a_fake_nvidia_smi(tmp_path):
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: Fake (UUID: GPU-a)'\necho 'GPU 1: Fake (UUID: GPU-b)'\n")
    smi.chmod(0o755)
    env = job_env()
    env.pop("CUDA_VISIBLE_DEVICES", None)
    _gpu_launch(tmp_path, PATH=f"{tmp_path}:{env['PATH']}")


# -- real GPUs -------------------------------------------------------------------------------
GPU_JOB = """
import torch, torch.distributed as dist
import yrmpi as yr
import yrmpi.torch as yt

@yr.instance(invoke_options=yr.InvokeOptions(cpu=1000, custom_resources={"gpu": 1}))
class W:
    def go(self):
        dev = yt.device()
        pg = yt.process_group()
        t = torch.ones(4, device=dev)
        dist.all_reduce(t, group=pg)
        back = yr.collective.allreduce(torch.ones(4, device=dev))
        return dev.type, t.sum().item(), back.device.type, back.sum().item()

yr.init()
n = int(yr.resources()["total"]["custom_total"].get("gpu", 0))
ws = [W.invoke() for _ in range(n)]
print("GPU", yr.get([w.go.invoke() for w in ws]), n)
yr.finalize()
"""


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_real_gpus_bound_and_reduced(run_job):
    n = torch.cuda.device_count()
    proc = run_job(GPU_JOB, n=n + 1, timeout=300)
    line = next(x for x in proc.stdout.splitlines() if x.startswith("GPU "))
    assert proc.returncode == 0 and f"('cuda', {4.0 * n}, 'cuda', {4.0 * n})" in line, proc.stdout + proc.stderr


CUDA_JOB = """
import torch
import yrmpi as yr
import yrmpi.torch as yt

@yr.instance(invoke_options=yr.InvokeOptions(cpu=1000, custom_resources={"gpu": 1}))
class W:
    def go(self):
        dev = yt.device()
        r, n = yr.collective.rank(), yr.collective.size()
        x = torch.full((1000,), float(r + 1), device=dev)
        out = torch.empty_like(x)
        assert yr.collective.allreduce(x, out=out) is out and torch.all(out == n * (n + 1) / 2)
        assert yr.collective.allreduce(x, out=x) is x and torch.all(x == n * (n + 1) / 2)
        mine = torch.zeros(8, device=dev)
        got = yr.collective.broadcast(torch.arange(8.0, device=dev) if r == 0 else mine)
        assert got.device.type == "cuda" and torch.equal(got.cpu(), torch.arange(8.0)) and (r == 0 or got is mine)
        return n

yr.init()
n = int(yr.resources()["total"]["custom_total"].get("gpu", 0))
ws = [W.invoke() for _ in range(n)]
print("CUDA", yr.get([w.go.invoke() for w in ws]))
yr.finalize()
"""


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("setting, path", [("0", "staged through host memory"), ("", None)])
def test_cuda_tensors_in_collectives_staged_and_detected(run_job, setting, path):
    """allreduce (out=, in place) and broadcast of CUDA tensors, staged (YRMPI_CUDA_AWARE=0)
    and on the path the MPI library's answer picks; the log says which."""
    n = torch.cuda.device_count()
    proc = run_job(CUDA_JOB, n=n + 1, timeout=300, YRMPI_CUDA_AWARE=setting)
    assert proc.returncode == 0 and f"CUDA {[n] * n}" in proc.stdout, proc.stdout + proc.stderr
    said = [x for x in proc.stderr.splitlines() if "CUDA tensors" in x]
    assert said and (path is None or path in said[0]), proc.stderr


# -- the example -----------------------------------------------------------------------------
@pytest.mark.slow
def test_torch_sweep_example_matches_single_process_training(tmp_path):
    """The example sweep: DDP over yrmpi.torch on the digits gives the weights of one process
    training with the global batch; metrics returned as a 0-d tensor and a numpy float32 rank."""
    pytest.importorskip("sklearn")
    out = tmp_path / "out"
    proc = run_yrmpi(["sweep", str(ROOT / "jobs" / "torch_sweep.yaml"), "-o", str(out), "--set", "params.epochs=2",
                      "--set", "params.lr=[0.5]", "--set", "params.verify=true"], timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 2 and [r["rank"] for r in rows] == ["1", "2"], rows
    for row in rows:
        assert row["metric.verified"] == "true" and float(row["metric.max_weight_diff"]) < 1e-4, row
        assert 0.3 < float(row["metric.accuracy"]) <= 1.0 and float(row["metric.loss"]) > 0, row
