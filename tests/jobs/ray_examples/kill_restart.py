"""ray.kill(actor, no_restart=False): the actor is killed and, while max_restarts allows, comes
back (its constructor runs again) under the same handle; with no restart left it stays dead and
its calls raise RayActorError. Runs under Ray and, with only the import line changed, under
yrmpi.ray."""

import uuid

import ray


@ray.remote(max_restarts=1)
class Counter:
    def __init__(self):
        self.n = 0
        self.incarnation = uuid.uuid4().hex

    def incr(self):
        self.n += 1
        return self.n

    def ping(self):
        return self.incarnation


def wait_for_new_incarnation(actor, old):
    """ray.kill returns before the actor is gone, and Ray answers a call made while it restarts
    with ActorUnavailableError: ask until the new incarnation answers."""
    while True:
        try:
            if ray.get(actor.ping.remote()) != old:
                return
        except ray.exceptions.ActorUnavailableError:
            continue


if __name__ == "__main__":
    ray.init(num_cpus=4)
    counter = Counter.remote()
    print("before:", [ray.get(counter.incr.remote()) for _ in range(3)])
    first = ray.get(counter.ping.remote())
    ray.kill(counter, no_restart=False)
    wait_for_new_incarnation(counter, first)
    print("restarted:", [ray.get(counter.incr.remote()) for _ in range(2)])
    ray.kill(counter, no_restart=False)  # its one restart is used up: it stays dead
    while True:  # (a call may still reach it before the kill does)
        try:
            ray.get(counter.ping.remote())
        except ray.exceptions.ActorUnavailableError:
            continue
        except ray.exceptions.RayActorError:
            print("dead: RayActorError")
            break
    ray.shutdown()
