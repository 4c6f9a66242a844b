"""PyTorch on real ranks: tensors on the wire, a torch process group per worker group (DDP,
torch.distributed calls, re-forming, tear-down, two groups sharing ranks, fail-fast), GPU
capacity and binding from what the node says. tests/test_torch.py runs it with
YRMPI_CPU_PER_RANK=2000 and YRMPI_RESOURCES='{"ga": 1, "gb": 1}' on 4 ranks (3 hosts), so a
worker that asks for `ga: 1` has a rank to itself among its group's workers, while the
workers of a `gb` group can share those ranks.
"""

import os
import threading
import time

import checklib
import numpy as np
import torch
import torch.distributed as dist
from mpi4py import MPI

import yrmpi as yr
import yrmpi.torch as yt

C = yr.collective
made = []


def check(fn):
    return checklib.check(checklib.ending_what_it_made(made)(fn))


def spawn(cls, n, *args):
    hs = [cls.invoke(*args) for _ in range(n)]
    made.extend(hs)
    return hs


def state():
    """What torch and yrmpi.torch hold on this rank: process groups, store threads."""
    from torch.distributed import distributed_c10d as c10d

    from yrmpi.torch import group as g

    names = sorted(t.name for t in threading.enumerate() if t.name.startswith("yrmpi-torch"))
    return len(c10d._world.pg_map), len(g._entries), names


class Work:
    def echo(self, x):
        return x

    def rank(self):
        return MPI.COMM_WORLD.Get_rank()

    def env(self, name):
        return os.environ.get(name)

    def allreduce(self, group=None):
        pg = yt.process_group(group)
        t = torch.full((4,), float(pg.rank() + 1))
        dist.all_reduce(t, group=pg)
        assert pg.rank() == C.rank(group) and pg.size() == C.size(group)
        return pg.rank(), pg.size(), t.tolist(), yt.process_group(group) is pg, id(pg)

    def ddp_step(self, xs, ys):
        """One DDP step on this member's shard (sampler); returns the weights after it."""
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 1)
        ddp = yt.ddp(model)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
        idx = list(yt.sampler(range(len(xs)), shuffle=False))
        loss = torch.nn.functional.mse_loss(ddp(xs[idx]), ys[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        return model.weight.detach().clone(), model.bias.detach().clone(), idx

    def state(self):
        return state()

    def collective_tensors(self):
        """Every collective on tensors, checked by each member against torch itself."""
        r, n = C.rank(), C.size()
        total = n * (n + 1) / 2
        x = torch.full((1000,), float(r + 1))
        got = C.allreduce(x)
        assert type(got) is torch.Tensor and got.dtype == torch.float32 and torch.all(got == total), got[:3]
        assert torch.all(x == r + 1), "the input must not change"
        out = torch.empty(1000)
        assert C.allreduce(x, out=out) is out and torch.all(out == total)
        for _ in range(3):  # the same buffers again and again: the fast path, in place
            y = torch.full((1000,), float(r + 1))
            x.copy_(y)
            assert C.allreduce(x, out=x) is x and torch.all(x == total)
        assert torch.allclose(C.allreduce(torch.full((4,), float(r)), op="mean"), torch.full((4,), (n - 1) / 2))
        assert torch.equal(C.allreduce(torch.tensor([r, -r]), op="max"), torch.tensor([n - 1, 0]))
        strided = torch.arange(12.0)[::2] + r
        assert torch.allclose(C.allreduce(strided), sum(torch.arange(12.0)[::2] + k for k in range(n)))
        for dt in (torch.bfloat16, torch.float16):  # reduced in float32, rounded once
            vals = [torch.full((8,), 1.0 + k / 7, dtype=dt) for k in range(n)]
            want = sum(v.float() for v in vals).to(dt)
            got = C.allreduce(vals[r].clone())
            assert got.dtype == dt and torch.equal(got, want), (dt, got[0], want[0])
            buf = vals[r].clone()
            assert C.allreduce(buf, out=buf) is buf and torch.equal(buf, want)
        _check_bf16_broadcasts(r, n)
        g = C.allgather(torch.full((2,), r, dtype=torch.bfloat16))
        assert g.dtype == torch.bfloat16 and torch.equal(g, torch.arange(n).repeat_interleave(2).view(n, 2).bfloat16())
        rs = C.reduce_scatter(torch.arange(2 * n, dtype=torch.float64) * (r + 1))
        assert torch.allclose(rs, torch.arange(2 * r, 2 * r + 2, dtype=torch.float64) * total), rs
        sparse = C.allreduce(torch.ones(3).to_sparse())  # pickled (one warning), still right
        assert torch.equal(sparse.to_dense(), torch.full((3,), float(n)))
        return r, n

    def collective_direct(self):
        """The direct (CUDA-aware) path, on CPU memory: this rank's tensors go to MPI as they are
        (device.DIRECT_DEVICES patched; restore_route undoes it once every member is done)."""
        from yrmpi.collective import device

        device.DIRECT_DEVICES, device._decision = ("cuda", "cpu"), device.Decision(True, "a test")
        r, n = C.rank(), C.size()
        total = n * (n + 1) / 2
        x = torch.full((1000,), float(r + 1))
        got = C.allreduce(x)
        assert type(got) is torch.Tensor and torch.all(got == total) and torch.all(x == r + 1), got[:3]
        out = torch.empty(1000)
        assert C.allreduce(x, out=out) is out and torch.all(out == total)
        assert C.allreduce(x, out=x) is x and torch.all(x == total)
        holey = torch.zeros(1000, 2)[:, 0]  # an out that is not contiguous
        assert C.allreduce(torch.full((1000,), 1.0), out=holey) is holey and torch.all(holey == n)
        assert torch.allclose(C.allreduce(torch.full((4,), float(r)), op="mean"), torch.full((4,), (n - 1) / 2))
        assert torch.equal(C.allreduce(torch.tensor([r, -r]), op="max"), torch.tensor([n - 1, 0]))
        assert torch.equal(C.allreduce(torch.tensor([r == 0, True]), op="min"), torch.tensor([n == 1, True]))
        mixed = C.allreduce(np.full(3, 1.0) if r % 2 else torch.ones(3, dtype=torch.float64))
        assert (isinstance(mixed, np.ndarray) if r % 2 else type(mixed) is torch.Tensor) and (mixed == n).all()
        _check_bf16_broadcasts(r, n)
        try:
            C.allreduce(torch.ones(3), out=torch.ones(4))
        except yr.YRError as exc:
            assert "out must be a tensor of shape [3]" in str(exc), exc
        else:
            raise AssertionError("a bad out must raise")
        return r, n

    def restore_route(self):
        from yrmpi.collective import device

        device.DIRECT_DEVICES, device._decision = ("cuda",), None

    def fail_after(self, delay):
        self.model = yt.ddp(torch.nn.Linear(2, 2))  # held: yrmpi must still release the group
        time.sleep(delay)
        raise RuntimeError("worker failed on purpose")

    def blocked_allreduce(self):
        self.model = yt.ddp(torch.nn.Linear(2, 2))
        pg = yt.process_group()
        start = time.monotonic()
        try:
            dist.all_reduce(torch.ones(2), group=pg)  # the failing member never joins
            outcome = "completed"
        except Exception as exc:
            outcome = type(exc).__name__
        return outcome, time.monotonic() - start



def _check_bf16_broadcasts(r: int, n: int) -> None:
    """Broadcast of a bf16 tensor into this member's buffer (filled in place) and to a member
    that passes None (a new tensor), bit for bit."""
    root = n - 1
    src = torch.arange(6, dtype=torch.bfloat16) * 0.5
    mine = torch.zeros(6, dtype=torch.bfloat16)
    got = C.broadcast(src if r == root else mine, root=root)
    assert torch.equal(got, src) and (r == root or got is mine), got
    got = C.broadcast(src if r == 0 else None)
    assert type(got) is torch.Tensor and got.dtype == torch.bfloat16 and torch.equal(got, src), got

@yr.instance(invoke_options=yr.InvokeOptions(cpu=1000, custom_resources={"ga": 1}))
class Worker(Work):
    pass


@yr.instance(invoke_options=yr.InvokeOptions(cpu=1000, custom_resources={"gb": 1}))
class OtherWorker(Work):
    pass


@yr.instance(invoke_options=yr.InvokeOptions(cpu=700))
class SharedWorker(Work):  # two to a rank of 2000 millicores
    pass


@yr.instance(invoke_options=yr.InvokeOptions(cpu=0, memory=10))
class Supervisor:
    def __init__(self, other, n):
        self.ws = spawn(OtherWorker if other else Worker, n)

    def ranks(self):
        return yr.get([w.rank.invoke() for w in self.ws])

    def allreduce(self):
        return yr.get([w.allreduce.invoke() for w in self.ws])


# -- tensors on the wire --------------------------------------------------------------------
@check
def tensors_travel_as_buffers():
    (w,) = spawn(Worker, 1)
    big = torch.randn(512, 512)  # 1 MB: out of band
    for t in (big, big.to(torch.bfloat16), big.half(), big[:, ::2], torch.arange(5), torch.tensor(2.5),
              torch.zeros(0, 3), torch.ones(3, dtype=torch.bool)):
        back = yr.get(w.echo.invoke(t))
        assert type(back) is torch.Tensor and back.dtype == t.dtype and torch.equal(back, t), t.dtype
    p = torch.nn.Parameter(torch.randn(300, 300))
    back = yr.get(w.echo.invoke(p))
    assert isinstance(back, torch.nn.Parameter) and back.requires_grad and torch.equal(back, p)
    ref = yr.put({"w": big, "n": np.ones(3)})
    got = yr.get(w.echo.invoke(ref))
    assert torch.equal(got["w"], big) and np.array_equal(got["n"], np.ones(3))


@check
def tensors_in_collectives():
    for cls, n in ((Worker, 3), (SharedWorker, 4)):  # one member per rank; members sharing ranks
        hs = spawn(cls, n)
        assert sorted(yr.get([h.collective_tensors.invoke() for h in hs], timeout=120)) == [(r, n) for r in range(n)]
        for h in hs:
            h.terminate(is_sync=True)
        made.clear()


@check
def tensors_in_collectives_direct():
    """The path a CUDA-aware MPI gets, on CPU tensors (this machine may have no GPU)."""
    for cls, n in ((Worker, 3), (SharedWorker, 4)):
        hs = spawn(cls, n)
        assert sorted(yr.get([h.collective_direct.invoke() for h in hs], timeout=120)) == [(r, n) for r in range(n)]
        yr.get([h.restore_route.invoke() for h in hs])
        for h in hs:
            h.terminate(is_sync=True)
        made.clear()


# -- a process group per worker group -------------------------------------------------------
@check
def process_group_allreduce_and_cache():
    ws = spawn(Worker, 3)
    got = sorted(yr.get([w.allreduce.invoke() for w in ws]))
    assert [g[:4] for g in got] == [(r, 3, [6.0] * 4, True) for r in range(3)], got
    again = sorted(yr.get([w.allreduce.invoke() for w in ws]))
    assert [g[4] for g in again] == [g[4] for g in got], "the same group must give the same process group"


@check
def ddp_step_equals_full_batch():
    ws = spawn(Worker, 3)
    torch.manual_seed(1)
    xs, ys = torch.randn(12, 3), torch.randn(12, 1)
    results = yr.get([w.ddp_step.invoke(xs, ys) for w in ws])
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = torch.nn.functional.mse_loss(model(xs), ys)  # equal shards: the mean of the shard means
    opt.zero_grad()
    loss.backward()
    opt.step()
    shards = sorted(i for _, _, idx in results for i in idx)
    assert shards == list(range(12)), shards
    for weight, bias, _ in results:
        assert torch.allclose(weight, model.weight, atol=1e-6) and torch.allclose(bias, model.bias, atol=1e-6)


@check
def reformed_when_a_member_ends_and_destroyed_with_the_instance():
    ws = spawn(Worker, 3)
    first = yr.get([w.allreduce.invoke() for w in ws])
    ws[2].terminate(is_sync=True)
    second = sorted(yr.get([w.allreduce.invoke() for w in ws[:2]]))
    assert [g[:3] for g in second] == [(0, 2, [3.0] * 4), (1, 2, [3.0] * 4)], second
    assert {g[4] for g in second}.isdisjoint({g[4] for g in first}), "a new group must form"
    assert all(s[0] == 1 and s[1] == 1 for s in yr.get([w.state.invoke() for w in ws[:2]])), "old one destroyed"
    for w in ws[:2]:
        w.terminate(is_sync=True)
    time.sleep(0.3)  # (the watcher looks every 50 ms)
    fresh = spawn(Worker, 3)  # the same ranks, reused by the next "experiment"
    assert yr.get([w.state.invoke() for w in fresh]) == [(0, 0, [])] * 3


@check
def two_groups_sharing_ranks_get_their_own():
    a = Supervisor.invoke(False, 3)
    b = Supervisor.invoke(True, 3)
    made.extend([a, b])
    ra, rb = yr.get(a.ranks.invoke()), yr.get(b.ranks.invoke())
    assert sorted(ra) == sorted(rb) == [1, 2, 3], (ra, rb)  # every rank holds one of each group
    ga, gb = yr.get([a.allreduce.invoke(), b.allreduce.invoke()])
    assert sorted(g[:3] for g in ga) == sorted(g[:3] for g in gb) == [(r, 3, [6.0] * 4) for r in range(3)]


@check
def fail_fast_aborts_a_blocked_torch_collective():
    ws = spawn(Worker, 2)
    blocked = ws[0].blocked_allreduce.invoke()
    failing = ws[1].fail_after.invoke(1.0)
    try:
        yr.get(failing)
    except Exception as exc:
        assert "on purpose" in str(exc)
    outcome, waited = yr.get(blocked, timeout=60)
    assert outcome != "completed" and waited < 30, (outcome, waited)


# -- GPUs from what the node says (set by tests/test_torch.py for one launch) ----------------
@check
def gpus_detected_shared_and_bound():
    want = os.environ.get("TORCH_CHECKS_GPUS")
    if want is None:
        return
    usage = yr.resources()
    per_rank = {row["rank"]: row["custom_total"].get("gpu", 0) for row in usage["ranks"]}
    assert per_rank == {1: 1, 2: 1, 3: 0}, usage  # 2 GPUs on a node of 3 host ranks

    @yr.instance(invoke_options=yr.InvokeOptions(cpu=100, custom_resources={"gpu": 1}))
    class GpuUser:
        def seen(self):
            return MPI.COMM_WORLD.Get_rank(), os.environ.get("CUDA_VISIBLE_DEVICES")

    hs = spawn(GpuUser, 2)
    seen = sorted(yr.get([h.seen.invoke() for h in hs]))
    assert seen == [(1, want.split(",")[0]), (2, want.split(",")[1])], seen


if __name__ == "__main__":
    checklib.main()
