"""Ray's named, detached actor (docs.ray.io, Named Actors and Actor Lifetimes): created once with a
name in the job's namespace, found from anywhere with ray.get_actor, or with get_if_exists. Runs
under Ray and, with only the import line changed, under yrmpi.ray."""

import time

import ray


@ray.remote
class Counter:
    def __init__(self):
        self.value = 0

    def increment(self):
        self.value += 1
        return self.value


@ray.remote
def bump_by_name(name):
    # A task finds the actor by name, in the job's namespace.
    counter = ray.get_actor(name)
    return ray.get(counter.increment.remote())


if __name__ == "__main__":
    ray.init(num_cpus=8, namespace="colors")
    counter = Counter.options(name="some_name", lifetime="detached").remote()
    print("driver:", ray.get(counter.increment.remote()))
    print("task:", ray.get(bump_by_name.remote("some_name")))
    print("get_actor:", ray.get(ray.get_actor("some_name").increment.remote()))
    same = Counter.options(name="some_name", get_if_exists=True).remote()
    print("get_if_exists:", ray.get(same.increment.remote()))
    print("named actors:", ray.util.list_named_actors())
    print("explicit namespace:", ray.get(ray.get_actor("some_name", namespace="colors").increment.remote()))
    try:
        ray.get_actor("some_name", namespace="other")
    except ValueError:
        print("not found in namespace 'other'")
    ray.kill(counter)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            ray.get_actor("some_name")
        except ValueError:
            print("gone after ray.kill")
            break
        time.sleep(0.2)
    ray.shutdown()
