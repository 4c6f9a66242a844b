"""PyTorch support without a yrmpi job: tensors in the wire's pickles, GPU detection and sharing
from what a node says, and the MPI store (two plain MPI ranks)."""

from __future__ import annotations

import copyreg
import io
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import ROOT, job_env

from yrmpi.collective import device
from yrmpi.core import devices
from yrmpi.core.errors import YRValueError
from yrmpi.transport import pickling

torch = pytest.importorskip("torch")


def roundtrip(obj):
    buffers = pickling.Buffers()
    data = pickling.dumps(obj, buffers)
    # as the wire delivers them: fresh writable byte arrays
    return pickling.loads(data, [np.frombuffer(bytearray(b.raw()), dtype=np.uint8) for b in buffers]), buffers


# -- tensors on the wire ---------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda: torch.randn(256, 256),  # 256 KB: out of band
    lambda: torch.randn(256, 256).to(torch.bfloat16),  # no numpy equivalent
    lambda: torch.randn(256, 256).half(),
    lambda: torch.randn(300, 300)[:, ::3],  # not contiguous
    lambda: torch.arange(10),
    lambda: torch.tensor(2.5),
    lambda: torch.zeros(0, 4),
    lambda: torch.tensor([True, False]),
    lambda: torch.randn(4, dtype=torch.complex64).conj(),
])
def test_tensors_round_trip(make):
    t = make()
    back, _ = roundtrip({"t": t})
    assert type(back["t"]) is torch.Tensor and back["t"].dtype == t.dtype and back["t"].shape == t.shape
    assert torch.equal(back["t"], t.resolve_conj())


def test_large_tensors_leave_the_pickle_without_a_copy():
    t = torch.randn(512, 512)
    buffers = pickling.Buffers()
    data = pickling.dumps((1, t), buffers)
    assert len(data) < 1000 and len(buffers) == 1 and buffers[0].raw().nbytes == t.numel() * 4
    assert np.shares_memory(np.asarray(buffers[0].raw()), t.numpy())  # the tensor's own memory


def test_parameters_and_requires_grad_survive():
    p = torch.nn.Parameter(torch.randn(200, 200))
    (back, leaf), _ = roundtrip((p, torch.ones(3, requires_grad=True)))
    assert isinstance(back, torch.nn.Parameter) and back.requires_grad and torch.equal(back, p)
    assert leaf.requires_grad and leaf.is_leaf


def test_what_must_be_pickled_by_torch_says_so_once(caplog):
    pickling._said.discard("tensor:sparse_coo tensor")
    sparse = torch.randn(5).to_sparse()
    with caplog.at_level("WARNING", logger="yrmpi"):
        for _ in range(3):
            back, _ = roundtrip(sparse)
    assert torch.equal(back.to_dense(), sparse.to_dense())
    assert [r.getMessage() for r in caplog.records].count(
        "a sparse_coo tensor is pickled by torch (copied, in band) instead of sent as a buffer") == 1


def test_other_picklers_keep_torch_reduction():
    """Nothing is registered globally: torch.save and pickle.dumps are torch's own."""
    assert torch.Tensor not in copyreg.dispatch_table
    assert b"_rebuild_tensor" in pickle.dumps(torch.ones(3))
    f = io.BytesIO()
    torch.save({"w": torch.ones(3)}, f)
    f.seek(0)
    assert torch.equal(torch.load(f)["w"], torch.ones(3))


def test_cloudpickle_path_sends_tensors_out_of_band_too():
    def local(x):  # a function defined here travels by value (cloudpickle)
        return x

    buffers = pickling.Buffers()
    data = pickling.dumps((local, torch.randn(300, 300)), buffers)
    fn, t = pickling.loads(data, [np.frombuffer(bytearray(b.raw()), dtype=np.uint8) for b in buffers])
    assert len(buffers) == 1 and fn(3) == 3 and t.shape == (300, 300)


def test_yrmpi_imports_and_pickles_without_torch():
    code = textwrap.dedent("""
        import sys

        class NoTorch:  # an environment without torch: importing it fails
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("no torch here")

        sys.meta_path.insert(0, NoTorch())
        import numpy as np
        import yrmpi
        from yrmpi.transport import pickling
        b = pickling.Buffers()
        pickling.dumps((1, np.zeros(1 << 16)), b)
        assert len(b) == 1 and "torch" not in sys.modules
        print("ok")
    """)
    env = job_env()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert proc.stdout.strip() == "ok", proc.stderr


# -- GPUs from what a node says ---------------------------------------------------------------
@pytest.mark.parametrize("env, want", [
    ({"CUDA_VISIBLE_DEVICES": "2,3"}, ["2", "3"]),
    ({"CUDA_VISIBLE_DEVICES": "GPU-aa,GPU-bb"}, ["GPU-aa", "GPU-bb"]),
    ({"CUDA_VISIBLE_DEVICES": ""}, []),
    ({"CUDA_VISIBLE_DEVICES": "-1", "SLURM_JOB_GPUS": "0,1"}, []),  # CUDA's own word wins
    ({"SLURM_STEP_GPUS": "0-2,5", "SLURM_JOB_GPUS": "0"}, ["0", "1", "2", "5"]),
    ({"SLURM_JOB_GPUS": "1,3"}, ["1", "3"]),
    ({"SLURM_GPUS_ON_NODE": "4"}, ["0", "1", "2", "3"]),
    ({"SLURM_GPUS_ON_NODE": "a100:2"}, ["0", "1"]),
    ({"PATH": "/nonexistent"}, []),
])
def test_detect_from_variables(env, want):
    assert devices.detect(env)[0] == want


def test_detect_from_a_fake_nvidia_smi(tmp_path):
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA A100 (UUID: GPU-aa)'\necho 'GPU 1: NVIDIA A100 (UUID: GPU-bb)'\n")
    smi.chmod(0o755)
    assert devices.detect({"PATH": str(tmp_path)}) == (["0", "1"], "nvidia-smi -L")


@pytest.mark.parametrize("seen, want", [
    ([["0", "1"]] * 2, [["0"], ["1"]]),
    ([["0", "1"]] * 3, [["0"], ["1"], []]),  # more ranks than GPUs: the last sees none
    ([["0", "1", "2", "3"]] * 2, [["0", "1"], ["2", "3"]]),
    ([["0"], ["1"]], [["0"], ["1"]]),  # the launcher bound each rank already: kept
    ([[], []], [[], []]),
])
def test_share(seen, want):
    assert devices.share(seen) == want


def test_assign_per_node_skips_nodes_without_gpus():
    seen = {1: ("a", ["0", "1"]), 2: ("a", ["0", "1"]), 3: ("b", []), 4: ("b", []), 5: ("a", ["0", "1"])}
    assert devices.assign(seen) == {1: ["0"], 2: ["1"], 5: []}


def test_bind_sets_only_the_share():
    env = {"CUDA_VISIBLE_DEVICES": "0,1"}
    assert devices.bind(["1"], env) is None and env["CUDA_VISIBLE_DEVICES"] == "1"
    devices.bind([], env)
    assert env["CUDA_VISIBLE_DEVICES"] == ""


# -- the MPI store ----------------------------------------------------------------------------
STORE_SCRIPT = """
import datetime, time
import torch.distributed as dist
from mpi4py import MPI
from yrmpi.torch.store import MPIStore

comm = MPI.COMM_WORLD
r = comm.Get_rank()
s = MPIStore(comm, timeout=datetime.timedelta(seconds=20))
if r == 1:
    time.sleep(0.3)
    s.set("late", b"v1")  # rank 0 is already waiting for it
assert s.get("late") == b"v1"
assert s.add("n", 2) in (2, 4) and s.add("n", 0) in (2, 4)
comm.Barrier()
assert s.add("n", 0) == 4 and s.num_keys() == 2
comm.Barrier()
if r == 0:
    assert s.compare_set("c", b"", b"x") == b"x"  # missing key, empty expectation: set
comm.Barrier()
assert s.compare_set("c", b"y", b"z") == b"x"  # wrong expectation: the current value
assert s.check(["late", "c"]) and not s.check(["nope"])
s.wait(["late"])
try:
    s.wait(["never"], datetime.timedelta(seconds=0.3))
except dist.DistStoreError as exc:
    assert "never" in str(exc)
else:
    raise AssertionError("wait must time out")
comm.Barrier()
if r == 1:
    assert s.delete_key("c") and not s.delete_key("c")
comm.Barrier()
tok = comm.allgather(s.token)
assert tok[0] == tok[1]
s.close()
print("store ok", r)
"""


@pytest.mark.mpi
def test_mpi_store_on_two_ranks(tmp_path):
    from yrmpi.launch import find_mpiexec

    script = tmp_path / "store.py"
    script.write_text(STORE_SCRIPT)
    proc = subprocess.run([find_mpiexec(), "--oversubscribe", "-n", "2", sys.executable, str(script)],
                          capture_output=True, text=True, env=job_env(), timeout=120, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.count("store ok") == 2, proc.stdout + proc.stderr[-3000:]


# -- yrmpi slurm with GPUs ---------------------------------------------------------------------
GPU_SWEEP = """
name: gpu-sweep
entry: sup.py:Sup
run: run
workers: 2
resources:
  supervisor: {cpu: 100, memory: 200}
  worker: {cpu: 1000, memory: 300, gpu: 1}
params: {lr: [0.1, 0.01, 0.001]}
seeds: [0]
metric: {name: loss, mode: min}
max_concurrent: 3
output: results
"""


def _gpu_sweep(tmp_path):
    (tmp_path / "sup.py").write_text("class Sup:\n    def run(self, params, trial):\n        return 0.0\n")
    (tmp_path / "s.yaml").write_text(GPU_SWEEP)
    return tmp_path / "s.yaml"


def test_slurm_script_asks_for_gpus_and_sizes_ranks_per_gpu(tmp_path, capsys, monkeypatch):
    from yrmpi.slurm import slurm_command

    monkeypatch.chdir(tmp_path)
    assert slurm_command([str(_gpu_sweep(tmp_path)), "--gpus-per-node", "4", "-o", "-"]) == 0
    text = capsys.readouterr().out
    # 3 experiments x 2 GPU workers = 6 GPUs: 2 nodes of 4 GPUs, 5 ranks each (4 GPU ranks + 1)
    assert "#SBATCH --gpus-per-node=4" in text and "##SBATCH --gres=gpu:4" in text
    assert "#SBATCH --nodes=2" in text and "#SBATCH --ntasks-per-node=5" in text and "#SBATCH --ntasks=10" in text
    assert "4 GPUs per node" in text


def test_slurm_without_gpus_for_a_gpu_sweep_says_what_to_add(tmp_path, capsys, monkeypatch):
    from yrmpi.slurm import slurm_command

    monkeypatch.chdir(tmp_path)
    assert slurm_command([str(_gpu_sweep(tmp_path)), "-o", "-"]) == 2
    assert "--gpus-per-node" in capsys.readouterr().err


def test_host_ranks_count_the_gpus_the_runtime_will_give_them():
    from yrmpi.slurm.sizing import _host_ranks

    ranks = _host_ranks(9, 1000, 1000, {}, tasks_per_node=5, gpus_per_node=4)
    # node0: ranks 1-4 (rank 0 is the driver), node1: ranks 5-9: the first 4 of each own a GPU
    assert [r.custom.get("gpu") for r in ranks] == [1, 1, 1, 1, 1, 1, 1, 1, 0]


# -- metrics ----------------------------------------------------------------------------------
def test_numpy_and_torch_scalars_are_numbers_in_metrics():
    from yrmpi.sweep.journal import json_safe
    from yrmpi.sweep.report import normalize_metrics

    metrics = {"loss": torch.tensor(0.5), "acc": np.float32(0.25), "n": np.int64(3),
               "grad": torch.tensor(1.5, requires_grad=True), "bf": torch.tensor(0.75, dtype=torch.bfloat16)}
    safe, notes = json_safe(metrics, "metrics")
    assert safe == {"loss": 0.5, "acc": 0.25, "n": 3, "grad": 1.5, "bf": 0.75} and not notes
    assert all(type(v) in (int, float) for v in safe.values())

    class Metric:
        name = "loss"

    assert normalize_metrics(torch.tensor(0.5), Metric()) == {"loss": 0.5}


# -- CUDA tensors: straight to MPI or staged (yrmpi/collective/device.py) ----------------------
@pytest.mark.parametrize("setting, reported, direct, why", [
    ("1", None, True, "YRMPI_CUDA_AWARE=1"),
    ("0", True, False, "YRMPI_CUDA_AWARE=0"),
    (None, True, True, "reports it is CUDA-aware"),
    ("", False, False, "reports it is not CUDA-aware"),
    (None, None, False, "has no CUDA query"),
])
def test_cuda_path_decided_by_the_variable_else_by_the_library(setting, reported, direct, why):
    asked = []
    got = device.decide(setting, lambda: asked.append(1) or reported)
    assert got.direct is direct and why in got.why, got
    assert asked == ([] if setting else [1]), "the variable, when set, overrides the library"


@pytest.mark.parametrize("bad", ["yes", "true", "2", " 1"])
def test_a_bad_cuda_aware_setting_names_the_variable_and_the_values(bad):
    with pytest.raises(YRValueError, match=r"YRMPI_CUDA_AWARE must be 1 .* 0 .* or unset .*got"):
        device.decide(bad, lambda: True)


def test_library_queries_open_mpi_then_mpich_else_none():
    class OpenMPI:
        def MPIX_Query_cuda_support(self):
            return 1

    class MPICH:
        def __init__(self, supported):
            self.supported = supported

        def MPIX_GPU_query_support(self, kind, flag):
            assert kind == device.MPIX_GPU_SUPPORT_CUDA
            flag.contents.value = self.supported
            return 0

    assert device.library_reports(OpenMPI()) is True
    assert device.library_reports(MPICH(1)) is True and device.library_reports(MPICH(0)) is False
    assert device.library_reports(object()) is None


@pytest.mark.parametrize("where, dtype, kind, direct, want", [
    ("cuda", "float32", "allreduce", True, "device"),
    ("cuda", "float32", "broadcast", True, "device"),
    ("cuda", "bfloat16", "broadcast", True, "device"),  # moved bit for bit
    ("cuda", "bfloat16", "allreduce", True, "staged"),  # reduced in float32 on the host
    ("cuda", "float16", "allreduce", True, "staged"),
    ("cuda", "float32", "allgather", True, "staged"),
    ("cuda", "float32", "reduce_scatter", True, "staged"),
    ("cuda", "float8_e4m3fn", "broadcast", True, "staged"),
    ("cuda", "float32", "allreduce", False, "staged"),
    ("cpu", "float32", "allreduce", True, "host"),
    ("mps", "float32", "allreduce", True, "staged"),
])
def test_route_of_a_tensor(where, dtype, kind, direct, want):
    assert device.route(where, dtype, kind, direct) == want


def test_the_decision_is_made_once_and_logged(monkeypatch, caplog):
    monkeypatch.setattr(device, "_decision", None)
    monkeypatch.setenv("YRMPI_CUDA_AWARE", "0")
    with caplog.at_level("INFO", logger="yrmpi"):
        first = device.decision()
        monkeypatch.setenv("YRMPI_CUDA_AWARE", "1")
        assert device.decision() is first and not first.direct
    lines = [r.getMessage() for r in caplog.records if "CUDA tensors" in r.getMessage()]
    assert lines == ["yr.collective: CUDA tensors are staged through host memory (YRMPI_CUDA_AWARE=0); for device "
                     "tensors use the process group of yrmpi.torch (NCCL)"], lines


def test_cpu_tensors_never_ask_for_the_cuda_decision(monkeypatch):
    from yrmpi.collective import tensors

    monkeypatch.setattr(device, "decision", lambda: pytest.fail("a CPU tensor asked"))
    assert tensors.path(torch.ones(3), "allreduce") == "host"
    assert tensors.path(torch.ones(3).to_sparse(), "allreduce") == "pickled"
