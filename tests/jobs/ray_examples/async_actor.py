"""Ray's async actors (docs.ray.io, AsyncIO / Concurrency for Actors): an actor with `async def`
methods runs its calls on one event loop, where they interleave at their awaits; `await ref` and
`await asyncio.gather(*refs)` wait for tasks inside them; an exception raised in an async method
reaches `ray.get` as a RayTaskError that is also of the user's class; `max_concurrency` caps the
calls running at once. Every line printed is decided by the order of the awaits and the cap,
not by timing (six calls sent together stay 0.5 s each). Runs under Ray and, with only the
import line changed, under yrmpi.ray."""

import asyncio

import ray


@ray.remote
def square(x):
    return x * x


@ray.remote
def broken():
    raise KeyError("no such key")


@ray.remote
class AsyncActor:
    def __init__(self):
        self.trace = []
        self.ping_arrived = asyncio.Event()
        self.pong_arrived = asyncio.Event()

    async def ping(self):
        # Waits for pong, which is called after it: run one after the other, this never returns.
        self.trace.append("ping starts")
        self.ping_arrived.set()
        await self.pong_arrived.wait()
        self.trace.append("ping ends")
        return "ping"

    async def pong(self):
        self.trace.append("pong starts")
        self.pong_arrived.set()
        await self.ping_arrived.wait()
        self.trace.append("pong ends")
        return "pong"

    def get_trace(self):
        return self.trace

    async def square_of(self, x):
        return await square.remote(x)

    async def sum_of_squares(self, xs):
        return sum(await asyncio.gather(*[square.remote(x) for x in xs]))

    async def gather_refs(self, refs):
        # refs inside a list arrive as refs (Ray resolves top-level arguments only)
        return await asyncio.gather(*refs)

    async def catch_task_error(self):
        try:
            await broken.remote()
        except KeyError as exc:
            return f"caught KeyError from the task, a RayTaskError: {isinstance(exc, ray.exceptions.RayTaskError)}"
        return "not raised"

    async def fail(self):
        await asyncio.sleep(0)
        raise ValueError("async method failed")


@ray.remote
class Gate:
    """Counts the calls inside `hold` at once: six sent together, each staying 0.5 s."""

    def __init__(self):
        self.inside = 0
        self.most_inside = 0

    async def hold(self):
        self.inside += 1
        self.most_inside = max(self.most_inside, self.inside)
        await asyncio.sleep(0.5)
        self.inside -= 1

    async def most(self):
        return self.most_inside


def most_at_once(gate):
    ray.get(gate.most.remote())  # started
    ray.get([gate.hold.remote() for _ in range(6)], timeout=60)
    return ray.get(gate.most.remote())


if __name__ == "__main__":
    ray.init(num_cpus=8)
    actor = AsyncActor.remote()
    print("ping and pong:", ray.get([actor.ping.remote(), actor.pong.remote()], timeout=60))
    trace = ray.get(actor.get_trace.remote())  # which one starts first is not defined
    print("both started before either ended:", sorted(trace[:2]) == ["ping starts", "pong starts"])
    print("await ref:", ray.get(actor.square_of.remote(7)))
    print("await asyncio.gather of task refs:", ray.get(actor.sum_of_squares.remote([1, 2, 3, 4])))
    print("await asyncio.gather of passed refs:",
          ray.get(actor.gather_refs.remote([square.remote(5), ray.put(6)])))
    print("await of a failing task:", ray.get(actor.catch_task_error.remote()))
    try:
        ray.get(actor.fail.remote())
        print("unreachable")
    except ValueError as exc:
        print("async method error: a ValueError:", isinstance(exc, ValueError),
              "a RayTaskError:", isinstance(exc, ray.exceptions.RayTaskError),
              "cause:", repr(exc.cause))
    print("the actor goes on:", ray.get(actor.square_of.remote(3)))
    print("calls at once, default max_concurrency:", most_at_once(Gate.remote()))
    print("calls at once, max_concurrency=2:", most_at_once(Gate.options(max_concurrency=2).remote()))
    ray.shutdown()
