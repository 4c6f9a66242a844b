"""Ray Core's semantics that Ray programs rely on, printed so that a run under Ray and a run under
yrmpi.ray (only the import line changed) can be compared line by line: errors and their classes,
timeouts, wait, cancel, nested refs, multiple returns, async and threaded actors, fate sharing."""

import asyncio
import time

import ray


@ray.remote
def fail(message):
    raise ValueError(message)


@ray.remote
def slow(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.01)
    return seconds


@ray.remote
def describe(top, nested):
    return type(top).__name__, type(nested[0]).__name__, ray.get(nested[0])


@ray.remote(num_returns=2)
def pair():
    return "left", "right"


@ray.remote
class Broken:
    def __init__(self):
        raise KeyError("no config")

    def ping(self):
        return "pong"


@ray.remote
class Child:
    def ping(self):
        return "pong"


@ray.remote
class Owner:
    def __init__(self):
        self.child = Child.remote()

    def get_child(self):
        return [self.child]

    def minmax(self, xs):
        return min(xs), max(xs)


@ray.remote
class AsyncActor:
    async def nap(self, seconds):
        await asyncio.sleep(seconds)
        return seconds


@ray.remote(max_concurrency=4)
class Threaded:
    def nap(self, seconds):
        time.sleep(seconds)
        return seconds


def until_actor_error(ref_fn, seconds=20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            ray.get(ref_fn(), timeout=5)
        except ray.exceptions.RayActorError:
            return True
        time.sleep(0.2)
    return False


if __name__ == "__main__":
    ray.init(num_cpus=8)

    try:
        ray.get(fail.remote("bad input"))
    except ValueError as exc:
        print("task error is a ValueError:", isinstance(exc, ValueError),
              "and a RayTaskError:", isinstance(exc, ray.exceptions.RayTaskError),
              "cause:", type(exc.cause).__name__, exc.cause)

    try:
        ray.get(slow.remote(3), timeout=0.2)
    except ray.exceptions.GetTimeoutError as exc:
        print("timeout: GetTimeoutError, a TimeoutError:", isinstance(exc, TimeoutError))

    refs = [slow.remote(0.1), slow.remote(0.1), slow.remote(30)]
    ready, not_ready = ray.wait(refs, num_returns=2, timeout=20)
    print("wait:", len(ready), "ready,", len(not_ready), "not ready")
    ready, not_ready = ray.wait(refs, num_returns=3, timeout=0.1)
    print("wait with a short timeout:", len(ready), "ready")

    ref = slow.remote(10)
    time.sleep(0.5)
    ray.cancel(ref)
    ray.cancel(refs[2])
    try:
        ray.get(ref, timeout=10)
    except ray.exceptions.TaskCancelledError:
        print("cancel: TaskCancelledError")

    value = ray.put(41)
    print("nested refs stay refs:", ray.get(describe.remote(value, [value])))
    print("put None:", ray.get(ray.put(None)))
    left, right = pair.remote()
    print("num_returns=2:", ray.get([left, right]))

    owner = Owner.remote()
    lo, hi = owner.minmax.options(num_returns=2).remote([3, 1, 2])
    print("method num_returns:", ray.get(lo), ray.get(hi))

    broken = Broken.remote()
    try:
        ray.get(broken.ping.remote())
    except ray.exceptions.RayActorError as exc:
        print("constructor error: RayActorError, actor_init_failed:", exc.actor_init_failed)

    start = time.monotonic()
    a = AsyncActor.remote()
    ray.get(a.nap.remote(0))
    start = time.monotonic()
    print("async actor:", ray.get([a.nap.remote(2) for _ in range(4)]),
          "concurrently:", time.monotonic() - start < 6)  # (one after another: 8 s)
    t = Threaded.remote()
    ray.get(t.nap.remote(0))
    start = time.monotonic()
    print("max_concurrency=4:", ray.get([t.nap.remote(2) for _ in range(4)]),
          "concurrently:", time.monotonic() - start < 6)

    child = ray.get(owner.get_child.remote())[0]
    print("child of a live owner:", ray.get(child.ping.remote()))
    ray.kill(owner)
    print("child dies with its owner:", until_actor_error(lambda: child.ping.remote()))

    try:
        ray.kill("not an actor")
    except ValueError:
        print("ray.kill of a non-actor: ValueError")
    ray.shutdown()
