"""The seed's tree (driver -> supervisors -> workers) written against `import yrmpi as yr`.

Run it with plain `python jobs/tree.py`: `yr.init()` launches the job on this machine
(YRMPI_NUM_RANKS ranks, default 9: one driver and eight one-core host ranks).
"""

import time

import yrmpi as yr

opt = yr.InvokeOptions(cpu=1000)


@yr.instance(invoke_options=opt)
class TrainingWorker:
    def train(self, shard_id, hyperparams):
        lr = hyperparams["lr"]
        print(f"Worker {shard_id} is training data shard with lr={lr}...")
        time.sleep(0.5)
        return f"Loss: {0.1 / lr}"


@yr.instance(invoke_options=opt)
class TrainingSupervisor:
    def __init__(self, hyperparams):
        self.hyperparams = hyperparams
        self.workers = []

    def start_training(self, num_workers):
        self.workers = [TrainingWorker.invoke() for _ in range(num_workers)]
        results = yr.get([w.train.invoke(i, self.hyperparams) for i, w in enumerate(self.workers)])
        return f"Hyperparameter {self.hyperparams} experiment completed, results: {results}"


if __name__ == "__main__":
    yr.init()
    supervisors = [TrainingSupervisor.invoke(cfg) for cfg in ({"lr": 0.01}, {"lr": 0.001})]
    for report in yr.get([s.start_training.invoke(num_workers=3) for s in supervisors]):
        print(report)
    yr.finalize()
