"""Ray's batch prediction with an ActorPool (docs.ray.io, ray.util.ActorPool and the batch
prediction pattern): the model is put in the object store once, each predictor actor loads it, and
the pool hands out batches. Runs under Ray and, with only the import line changed, under yrmpi.ray."""

import numpy as np
import ray


def load_model():
    return np.array([1.0, 2.0, 3.0])


@ray.remote
class BatchPredictor:
    def __init__(self, model):
        self.model = model

    def predict(self, batch):
        return [float(v) for v in np.asarray(batch) @ self.model]


if __name__ == "__main__":
    ray.init(num_cpus=8)
    model_ref = ray.put(load_model())
    actors = [BatchPredictor.remote(model_ref) for _ in range(3)]
    pool = ray.util.ActorPool(actors)
    batches = [[[i, i, i], [i, 0, 1]] for i in range(6)]
    for result in pool.map(lambda actor, batch: actor.predict.remote(batch), batches):
        print("ordered", result)
    unordered = pool.map_unordered(lambda actor, batch: actor.predict.remote(batch), batches)
    print("unordered, sorted", sorted(v for result in unordered for v in result))
    pool.submit(lambda actor, batch: actor.predict.remote(batch), [[1, 1, 1]])
    print("submit/get_next", pool.get_next(), pool.has_next())
    ray.shutdown()
