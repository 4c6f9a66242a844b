"""Data-parallel training on communicator subgroups, next to the parameter-server variant.

Each `Trainer` supervisor trains one model for one set of hyperparameters. Its `DPWorker`s each
hold one shard of a deterministic synthetic data set, compute gradients with numpy (logistic
regression, or an MLP with one hidden layer) and `yr.collective.allreduce` them every step, so
every worker applies the same full-batch update. The parameter-server variant does the same
training with the supervisor summing the gradients the workers return, as in the seed example.

    yrmpi run -n 9 jobs/data_parallel.py               # both variants, two learning rates
    yrmpi run -n 6 jobs/data_parallel.py --verify 25   # weights == single-process full batch?

The sweep runner calls `Trainer.train(params, trial)`; `trial` has `.workers`, `.worker_options`,
`.seed` and `.id`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from typing import Any

import numpy as np

try:
    import yr
except ImportError:  # plain `python data_parallel.py`: yr.init() launches the job itself
    import yrmpi as yr

DEFAULTS = {"model": "logreg", "lr": 0.5, "l2": 1e-3, "steps": 60, "hidden": 16, "samples": 4096,
            "features": 16}


# -- data and model: plain numpy, shared by the workers, the parameter server and the check ----
def make_data(samples: int, features: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic binary classification problem (the same on every rank)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((samples, features))
    w = rng.standard_normal(features)
    y = (X @ w + 0.5 * rng.standard_normal(samples) > 0).astype(np.float64)
    return X, y


def shard(samples: int, count: int, index: int) -> slice:
    """Rows of shard `index` of `count` (sizes differ by at most one)."""
    return slice(index * samples // count, (index + 1) * samples // count)


def init_theta(params: dict, seed: int) -> np.ndarray:
    """Initial weights as one flat float64 vector (one buffer to allreduce)."""
    d, h = params["features"], params["hidden"]
    rng = np.random.default_rng(seed + 1)
    if params["model"] == "logreg":
        return np.zeros(d + 1)
    return np.concatenate([rng.standard_normal(d * h) / np.sqrt(d), np.zeros(h),
                           rng.standard_normal(h) / np.sqrt(h), np.zeros(1)])


def loss_grad_sum(theta: np.ndarray, X: np.ndarray, y: np.ndarray, params: dict) -> tuple[float, np.ndarray, int]:
    """Summed (not averaged) log-loss, its gradient and correct predictions over these rows, so
    that shards add up to exactly the full batch whatever their sizes."""
    d, h = X.shape[1], params["hidden"]
    if params["model"] == "logreg":
        z = X @ theta[:d] + theta[d]
        dz = 1.0 / (1.0 + np.exp(-z)) - y
        grad = np.concatenate([X.T @ dz, [dz.sum()]])
    else:
        W1 = theta[:d * h].reshape(d, h)
        b1 = theta[d * h:d * h + h]
        w2 = theta[d * h + h:d * h + 2 * h]
        b2 = theta[-1]
        H = np.tanh(X @ W1 + b1)
        z = H @ w2 + b2
        dz = 1.0 / (1.0 + np.exp(-z)) - y
        dA = np.outer(dz, w2) * (1.0 - H * H)
        grad = np.concatenate([(X.T @ dA).ravel(), dA.sum(axis=0), H.T @ dz, [dz.sum()]])
    loss = float(np.sum(np.logaddexp(0.0, z) - y * z))
    correct = int(np.sum((z > 0) == (y > 0.5)))
    return loss, grad, correct


def update(theta: np.ndarray, grad_sum: np.ndarray, samples: int, params: dict) -> None:
    """One full-batch gradient step with L2, in place (the same arithmetic everywhere)."""
    theta -= params["lr"] * (grad_sum / samples + params["l2"] * theta)


def reference(params: dict, seed: int) -> np.ndarray:
    """Single-process full-batch training: what the distributed variants must reproduce."""
    p = {**DEFAULTS, **params}
    X, y = make_data(p["samples"], p["features"], seed)
    theta = init_theta(p, seed)
    for _ in range(p["steps"]):
        update(theta, loss_grad_sum(theta, X, y, p)[1], p["samples"], p)
    return theta


# -- the instances -----------------------------------------------------------------------------
@yr.instance
class DPWorker:
    """Holds one shard; trains in lock-step with its siblings through allreduce."""

    def __init__(self, params: dict, seed: int) -> None:
        self.params = params
        self.seed = seed
        self.X: np.ndarray | None = None
        self.y: np.ndarray | None = None

    def load(self, index: int | None = None, count: int | None = None) -> int:
        """Take shard `index` of `count`; by default this worker's place in its group."""
        if index is None:
            index, count = yr.collective.rank(), yr.collective.size()
        p = self.params
        X, y = make_data(p["samples"], p["features"], self.seed)
        rows = shard(p["samples"], count, index)
        self.X, self.y = X[rows].copy(), y[rows].copy()
        return len(self.y)

    def fit(self) -> dict:
        """Data-parallel training: broadcast the start, allreduce gradient and loss every step."""
        p = self.params
        me = yr.collective.rank()
        theta = yr.collective.broadcast(init_theta(p, self.seed) if me == 0 else None, root=0)
        buf = np.empty(theta.size + 1)
        losses = []
        for _ in range(p["steps"]):
            loss, grad, _ = loss_grad_sum(theta, self.X, self.y, p)
            buf[:-1] = grad
            buf[-1] = loss
            yr.collective.allreduce(buf, out=buf)  # in place: the buffer goes to MPI as it is
            losses.append(buf[-1] / p["samples"])
            update(theta, buf[:-1], p["samples"], p)
        loss, _, correct = loss_grad_sum(theta, self.X, self.y, p)
        totals = yr.collective.allreduce(np.array([loss, correct], dtype=np.float64))
        return {"theta": theta if me == 0 else None, "loss": totals[0] / p["samples"],
                "accuracy": totals[1] / p["samples"], "first_loss": losses[0] if losses else None}

    def grad(self, theta: np.ndarray) -> tuple[float, np.ndarray, int]:
        """Parameter-server step: this shard's summed loss and gradient."""
        return loss_grad_sum(theta, self.X, self.y, self.params)


@dataclasses.dataclass
class Trial:
    """What the sweep runner passes to Trainer.train (this file's own runs use it too)."""

    workers: int = 3
    worker_options: Any = None
    seed: int = 0
    id: str = "trial"


@yr.instance(invoke_options=yr.InvokeOptions(cpu=100))
class Trainer:
    """A supervisor: trains one model with one set of hyperparameters on its own workers."""

    def train(self, params: dict, trial: Any) -> dict:
        """Train data-parallel with allreduce (params["mode"] == "ps": parameter server)."""
        p = {**DEFAULTS, **(params or {})}
        mode = p.get("mode", "allreduce")
        if mode not in ("allreduce", "ps"):
            raise ValueError(f"params['mode'] must be 'allreduce' or 'ps', got {mode!r}")
        creator = DPWorker.options(trial.worker_options) if trial.worker_options is not None else DPWorker
        workers = [creator.invoke(p, trial.seed) for _ in range(trial.workers)]
        try:
            start = time.perf_counter()
            if mode == "allreduce":
                yr.get([w.load.invoke() for w in workers])
                ready = time.perf_counter()
                results = yr.get([w.fit.invoke() for w in workers])
                theta, loss, accuracy = results[0]["theta"], results[0]["loss"], results[0]["accuracy"]
            else:
                yr.get([w.load.invoke(i, len(workers)) for i, w in enumerate(workers)])
                ready = time.perf_counter()
                theta, loss, accuracy = self._parameter_server(workers, p, trial.seed)
            done = time.perf_counter()
        finally:
            for w in workers:
                w.terminate(is_sync=True)  # the next train() starts a fresh group
        metrics = {"loss": float(loss), "accuracy": float(accuracy), "mode": mode, "model": p["model"],
                   "lr": p["lr"], "steps": p["steps"], "workers": trial.workers, "trial": trial.id,
                   "seconds": done - start, "step_ms": 1000 * (done - ready) / max(p["steps"], 1)}
        if p.get("return_weights"):
            metrics["weights"] = theta.tolist()
        return metrics

    def train_ps(self, params: dict, trial: Any) -> dict:
        """The parameter-server variant of `train`."""
        return self.train({**(params or {}), "mode": "ps"}, trial)

    @staticmethod
    def _parameter_server(workers: list, p: dict, seed: int) -> tuple[np.ndarray, float, float]:
        theta = init_theta(p, seed)
        for _ in range(p["steps"]):
            parts = yr.get([w.grad.invoke(theta) for w in workers])
            update(theta, np.sum([g for _, g, _ in parts], axis=0), p["samples"], p)
        parts = yr.get([w.grad.invoke(theta) for w in workers])
        return theta, sum(loss for loss, _, _ in parts) / p["samples"], sum(c for _, _, c in parts) / p["samples"]


# -- driver ------------------------------------------------------------------------------------
def compare(lrs: list[float], workers: int, steps: int, model: str) -> None:
    """Both variants for each learning rate, one supervisor per learning rate, side by side."""
    opts = yr.InvokeOptions(cpu=1000)
    trainers = [Trainer.invoke() for _ in lrs]
    refs = []
    for i, (lr, trainer) in enumerate(zip(lrs, trainers)):
        params = {"lr": lr, "steps": steps, "model": model, "return_weights": True}
        trial = Trial(workers=workers, worker_options=opts, seed=7, id=f"lr={lr}")
        refs.append((trainer.train.invoke(params, trial), trainer.train_ps.invoke(params, trial), lr, i))
    print(f"{'lr':>6}  {'variant':<16} {'loss':>9} {'accuracy':>9} {'ms/step':>8}   weights vs other variant")
    for ar_ref, ps_ref, lr, _ in refs:
        ar, ps = yr.get([ar_ref, ps_ref], timeout=600)
        diff = np.max(np.abs(np.subtract(ar["weights"], ps["weights"]))) / max(np.max(np.abs(ar["weights"])), 1e-30)
        for m, name in ((ar, "allreduce"), (ps, "parameter server")):
            print(f"{lr:>6g}  {name:<16} {m['loss']:>9.5f} {m['accuracy']:>9.4f} {m['step_ms']:>8.3f}   "
                  f"max rel diff {diff:.1e}")
    for t in trainers:
        t.terminate()


def verify(steps: int) -> bool:
    """Data-parallel (and parameter-server) weights after `steps` == single-process training."""
    ok = True
    cases = [("logreg", Trial(workers=3, worker_options=yr.InvokeOptions(cpu=1000), seed=3, id="logreg")),
             ("mlp", Trial(workers=4, worker_options=yr.InvokeOptions(cpu=400), seed=5, id="mlp-shared-ranks"))]
    trainer = Trainer.invoke()
    for model, trial in cases:
        params = {"model": model, "steps": steps, "lr": 0.3, "samples": 1001, "return_weights": True}
        want = reference(params, trial.seed)
        for method in (trainer.train, trainer.train_ps):
            got = yr.get(method.invoke(params, trial), timeout=600)
            rel = float(np.max(np.abs(np.array(got["weights"]) - want)) / np.max(np.abs(want)))
            good = rel <= 1e-6
            ok &= good
            print(f"verify model={model} variant={got['mode']} workers={trial.workers} steps={steps} "
                  f"loss={got['loss']:.6f} rel_err={rel:.2e} {'OK' if good else 'FAIL'}")
    trainer.terminate()
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lr", type=float, nargs="+", default=[0.5, 0.05])
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--model", choices=("logreg", "mlp"), default="mlp")
    parser.add_argument("--verify", type=int, metavar="STEPS", default=None,
                        help="check both variants against single-process full-batch training")
    args = parser.parse_args(argv)
    yr.init()
    try:
        if args.verify is not None:
            return 0 if verify(args.verify) else 1
        compare(args.lr, args.workers, args.steps, args.model)
        return 0
    finally:
        yr.finalize()


if __name__ == "__main__":
    sys.exit(main())
