"""A supervisor that survives its workers: the seed's "restart workers when they crash".

Each ResilientTrainer trains a linear model by data-parallel gradient descent: its workers
hold data shards and return gradients, the supervisor averages them and steps. One worker
kills its own process on purpose mid-training. The supervisor sees the failure (code 1007),
creates a replacement worker for that shard and redoes the step that did not complete. The
final weights equal those of a crash-free run exactly.

Needs fault tolerance (ULFM), which `yrmpi run` and `python jobs/resilient_training.py` turn
on with the Open MPI wheel:  yrmpi run -n 8 jobs/resilient_training.py
"""

import os
import signal

import numpy as np

import yrmpi as yr

FEATURES = 8
ROWS_PER_SHARD = 256


def shard(index: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic data: the same shard on any rank, after any restart."""
    rng = np.random.default_rng(1000 + index)
    x = rng.normal(size=(ROWS_PER_SHARD, FEATURES))
    true_w = np.arange(1, FEATURES + 1, dtype=float)
    y = x @ true_w + rng.normal(scale=0.1, size=ROWS_PER_SHARD)
    return x, y


@yr.instance(invoke_options=yr.InvokeOptions(cpu=1000))
class ShardWorker:
    def __init__(self, index: int, crash_at_step: int | None = None):
        self.index = index
        self.crash_at_step = crash_at_step
        self.x, self.y = shard(index)

    def gradient(self, w: np.ndarray, step: int) -> np.ndarray:
        if step == self.crash_at_step:
            os.kill(os.getpid(), signal.SIGKILL)  # a real process death, not an exception
        residual = self.x @ w - self.y
        return self.x.T @ residual / len(self.y)


@yr.instance(invoke_options=yr.InvokeOptions(cpu=100))
class ResilientTrainer:
    def __init__(self, n_workers: int, crash: tuple[int, int] | None = None):
        crash_worker, crash_step = crash if crash else (None, None)
        self.workers = [ShardWorker.invoke(i, crash_step if i == crash_worker else None) for i in range(n_workers)]
        self.restarts = 0

    def train(self, steps: int, lr: float) -> dict:
        w = np.zeros(FEATURES)
        step = 0  # the last completed step is step - 1: a failed step is redone from the same w
        while step < steps:
            try:  # every worker's step; the first failure (the root cause) stops it at once
                grads = yr.collective.call_all(self.workers, "gradient", w, step)
            except yr.YRError as exc:
                if exc.code != 1007:  # a bug in the worker, not a death: let it propagate
                    raise
                i = exc.failed_index
                print(f"worker {i} died at step {step}; replacing it and redoing the step")
                self.workers[i] = ShardWorker.invoke(i)
                self.restarts += 1
                continue
            w = w - lr * np.mean(grads, axis=0)
            step += 1
        loss = float(np.mean([np.mean((shard(i)[0] @ w - shard(i)[1]) ** 2) for i in range(len(self.workers))]))
        return {"w": w, "loss": loss, "restarts": self.restarts}


if __name__ == "__main__":
    yr.init()
    steady = ResilientTrainer.invoke(3)
    crashing = ResilientTrainer.invoke(3, crash=(1, 5))
    a, b = yr.get([steady.train.invoke(20, 0.1), crashing.train.invoke(20, 0.1)])
    print(f"crash-free run: loss {a['loss']:.6f}, restarts {a['restarts']}")
    print(f"crashing run:   loss {b['loss']:.6f}, restarts {b['restarts']}")
    print(f"identical weights: {bool(np.array_equal(a['w'], b['w']))}")
    yr.finalize()
