"""Ray's fault-tolerant actor (docs.ray.io, Actor Fault Tolerance): an actor with max_restarts is
restarted when its process dies, its constructor runs again, and the call in flight is retried
(max_task_retries=-1); once the restarts are used up, calls raise RayActorError. Ray's page ends
the process with os._exit(0); this one kills it with SIGKILL, which every MPI's failure detector
sees (docs/ray.md). Runs under Ray and, with only the import line changed, under yrmpi.ray."""

import os
import signal

import ray


@ray.remote(max_restarts=2, max_task_retries=-1)
class Actor:
    def __init__(self):
        self.counter = 0

    def increment_and_possibly_fail(self):
        # Die after every 5 tasks.
        if self.counter == 5:
            os.kill(os.getpid(), signal.SIGKILL)
        self.counter += 1
        return self.counter


if __name__ == "__main__":
    ray.init(num_cpus=8)
    actor = Actor.remote()
    # The actor is restarted up to 2 times, so 15 tasks succeed: the sequence 1-5 three times.
    for _ in range(15):
        print(ray.get(actor.increment_and_possibly_fail.remote()))
    # After 2 restarts, every call raises a RayActorError.
    for _ in range(3):
        try:
            ray.get(actor.increment_and_possibly_fail.remote())
            print("unreachable")
        except ray.exceptions.RayActorError:
            print("FAILURE")
    ray.shutdown()
