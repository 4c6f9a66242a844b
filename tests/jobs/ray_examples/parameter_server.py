"""Ray's parameter server example (docs.ray.io, Parameter Server), synchronous and asynchronous,
with a numpy linear model in place of the PyTorch network so that it runs anywhere. Runs under Ray
and, with only the import line changed, under yrmpi.ray."""

import numpy as np
import ray

DIM = 10


def dataset(seed, n=256):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, DIM))
    return x, x @ (np.arange(DIM) / DIM)


def evaluate(weights):
    x, y = dataset(99)
    return float(np.mean((x @ weights - y) ** 2))


@ray.remote
class ParameterServer:
    def __init__(self, lr):
        self.weights = np.zeros(DIM)
        self.lr = lr

    def apply_gradients(self, *gradients):
        self.weights = self.weights - self.lr * np.mean(gradients, axis=0)
        return self.weights

    def get_weights(self):
        return self.weights


@ray.remote
class DataWorker:
    def __init__(self, seed):
        self.x, self.y = dataset(seed)

    def compute_gradients(self, weights):
        return 2 * self.x.T @ (self.x @ weights - self.y) / len(self.y)


if __name__ == "__main__":
    ray.init(num_cpus=8)
    workers = [DataWorker.remote(i) for i in range(4)]

    # Synchronous: every iteration waits for all the workers' gradients.
    ps = ParameterServer.remote(0.1)
    current_weights = ps.get_weights.remote()
    for i in range(20):
        gradients = [worker.compute_gradients.remote(current_weights) for worker in workers]
        # Calculate update after all gradients are available.
        current_weights = ps.apply_gradients.remote(*gradients)
        if i % 5 == 4:
            print(f"sync iter {i + 1}: loss {evaluate(ray.get(current_weights)):.6f}")

    # Asynchronous: the server applies each gradient as soon as it arrives.
    ps = ParameterServer.remote(0.05)
    current_weights = ps.get_weights.remote()
    gradients = {}
    for worker in workers:
        gradients[worker.compute_gradients.remote(current_weights)] = worker
    for _ in range(40):
        ready_gradient_list, _ = ray.wait(list(gradients))
        ready_gradient_id = ready_gradient_list[0]
        worker = gradients.pop(ready_gradient_id)
        # Compute and apply gradients.
        current_weights = ps.apply_gradients.remote(*[ready_gradient_id])
        gradients[worker.compute_gradients.remote(current_weights)] = worker
    final = evaluate(ray.get(current_weights))
    print(f"async: 40 updates, loss below 0.05: {final < 0.05}")
    ray.shutdown()
