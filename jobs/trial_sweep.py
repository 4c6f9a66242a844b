"""A sweep whose experiments report every epoch, checkpoint, resume mid-training and stop early.

`Trainer.fit(params, trial)` fits a noisy least-squares problem with numpy (a stand-in for a
PyTorch loop: swap the arrays for a model's state_dict).  Every epoch it calls
`trial.report({"loss": ...}, step=epoch, checkpoint=state)`: the sweep journals the report,
commits the checkpoint, and the scheduler (`scheduler:` in jobs/trial_sweep.yaml) may stop
the experiment there (`report` raises `TrialStopped`, which ends `fit` cleanly).  A requeued
or resumed experiment picks up from `trial.restore()`, so a kill costs at most one epoch, and
its final loss is the one an uninterrupted run gets (the random state is in the checkpoint).
"""

from __future__ import annotations

import os
import time

import numpy as np


def problem(seed: int, n: int = 256, d: int = 8):
    rng = np.random.default_rng(1000 + seed)
    x = rng.normal(size=(n, d))
    w = rng.normal(size=d)
    return x, x @ w + 0.1 * rng.normal(size=n)


class Trainer:
    def __init__(self, sleep: float = 0.0):
        self.sleep = float(os.environ.get("TRIAL_SLEEP", sleep))

    def fit(self, params: dict, trial) -> dict:
        x, y = problem(trial.seed)
        state, done = trial.restore()  # (None, None) on a first start
        if state is None:
            state, done = {"w": np.zeros(x.shape[1]), "rng": np.random.default_rng(trial.seed)}, 0
        w, rng = state["w"], state["rng"]
        for epoch in range(int(done) + 1, params["epochs"] + 1):
            for batch in np.array_split(rng.permutation(len(y)), 8):  # one epoch of minibatch SGD
                grad = x[batch].T @ (x[batch] @ w - y[batch]) / len(batch)
                w = w - params["lr"] * grad
            loss = float(np.mean((x @ w - y) ** 2))
            time.sleep(self.sleep)
            state = {"w": w, "rng": rng, "loss": loss}
            trial.report({"loss": loss, "epoch": epoch}, step=epoch, checkpoint=state)
        # A resume after the last epoch's report restores the final state: nothing left to train.
        return {"loss": state["loss"], "epochs": params["epochs"]}
