"""A worker group of Ray actors using yrmpi's collectives (yrmpi only: Ray has no such group).
A supervisor actor creates its trainer actors; they form the supervisor's group, as yrmpi's own
workers do, and allreduce with yr.collective (numpy) and, when torch is installed, through
yrmpi.torch's process group."""

import numpy as np

import yrmpi as yr
import yrmpi.ray as ray

try:
    import torch
except ImportError:
    torch = None


@ray.remote(num_cpus=1)
class Trainer:
    def __init__(self, shard):
        self.shard = shard

    def step(self):
        grad = np.full(4, float(self.shard))
        return yr.collective.rank(), yr.collective.allreduce(grad, op="mean").tolist()

    def torch_step(self):
        import torch.distributed as dist

        import yrmpi.torch

        pg = yrmpi.torch.process_group()
        t = torch.tensor([float(self.shard)])
        dist.all_reduce(t, group=pg)
        return float(t.item())


@ray.remote(num_cpus=1)
class Supervisor:
    def __init__(self, n):
        self.trainers = [Trainer.remote(i) for i in range(n)]

    def train(self):
        return ray.get([t.step.remote() for t in self.trainers])

    def train_torch(self):
        return ray.get([t.torch_step.remote() for t in self.trainers])


if __name__ == "__main__":
    ray.init(num_cpus=8)
    sup = Supervisor.remote(3)
    print("collective:", ray.get(sup.train.remote()))
    if torch is not None:
        print("torch:", ray.get(sup.train_torch.remote()))
    ray.shutdown()
