"""The seed's supervisor/worker example as a sweep entry (see jobs/seed_sweep.yaml).

`yrmpi sweep jobs/seed_sweep.yaml` creates one TrainingSupervisor per experiment and calls
`start_training(params, trial)` on it; the supervisor builds its own team of
`trial.workers` workers with `trial.worker_options`, as the sweep's capacity plan assumes.
"""

import math
import random
import time

import yr


@yr.instance
class TrainingWorker:
    def train(self, shard_id, params, seed):
        # Simulate training a data shard: a loss that is best at lr=0.01, with seeded noise.
        time.sleep(params.get("step_s", 0.2))
        rng = random.Random(seed * 1000 + shard_id)
        return (math.log10(params["lr"]) + 2) ** 2 + 0.05 * rng.random()


@yr.instance
class TrainingSupervisor:
    def __init__(self, label="seed"):
        self.label = label
        self.workers = []

    def start_training(self, params, trial):
        # Dynamically create the worker team this experiment was planned with.
        self.workers = [TrainingWorker.options(trial.worker_options).invoke() for _ in range(trial.workers)]
        losses = yr.get([w.train.invoke(i, params, trial.seed) for i, w in enumerate(self.workers)])
        return {"loss": sum(losses) / len(losses), "worst_shard": max(losses), "workers": len(losses)}
