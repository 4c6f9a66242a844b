"""Ray's task fault tolerance (docs.ray.io, Task Fault Tolerance): a task whose process dies is
run again, up to `max_retries` times (default 3); with `max_retries=0` it fails with
WorkerCrashedError. The task's own exceptions are retried only under `retry_exceptions` (True, or
the exception classes listed). Each attempt leaves a file, so the attempts are counted exactly;
the crash is a SIGKILL of the task's own process, on its first attempt only. Runs under Ray and,
with only the import line changed, under yrmpi.ray."""

import os
import signal
import tempfile

import ray


def attempt(folder, name):
    """This attempt's number (1 for the first), recorded in `folder`."""
    number = len([f for f in os.listdir(folder) if f.startswith(name + ".")]) + 1
    open(os.path.join(folder, f"{name}.{number}"), "w").close()
    return number


@ray.remote
def crash_once(folder, name):
    if attempt(folder, name) == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return "done"


@ray.remote
def raise_once(folder, name, error):
    if attempt(folder, name) == 1:
        raise error("first attempt")
    return "done"


@ray.remote(retry_exceptions=True, max_retries=2)
def always_raise(folder, name):
    attempt(folder, name)
    raise ValueError("every attempt")


def attempts(folder, name):
    return len([f for f in os.listdir(folder) if f.startswith(name + ".")])


if __name__ == "__main__":
    ray.init(num_cpus=8)
    folder = tempfile.mkdtemp()

    print("crash, default max_retries:", ray.get(crash_once.remote(folder, "a")), "attempts", attempts(folder, "a"))
    try:
        ray.get(crash_once.options(max_retries=0).remote(folder, "b"))
        print("unreachable")
    except ray.exceptions.WorkerCrashedError as exc:
        print("crash, max_retries=0: WorkerCrashedError, a RayError:", isinstance(exc, ray.exceptions.RayError),
              "attempts", attempts(folder, "b"))

    try:
        ray.get(raise_once.remote(folder, "c", ValueError))
        print("unreachable")
    except ValueError as exc:
        print("ValueError, no retry_exceptions: not retried, a RayTaskError:",
              isinstance(exc, ray.exceptions.RayTaskError), "attempts", attempts(folder, "c"))
    retried = raise_once.options(retry_exceptions=[ValueError])
    print("ValueError, retry_exceptions=[ValueError]:", ray.get(retried.remote(folder, "d", ValueError)),
          "attempts", attempts(folder, "d"))
    try:
        ray.get(retried.remote(folder, "e", KeyError))
        print("unreachable")
    except KeyError:
        print("KeyError, retry_exceptions=[ValueError]: not retried, attempts", attempts(folder, "e"))
    print("KeyError, retry_exceptions=True:",
          ray.get(raise_once.options(retry_exceptions=True).remote(folder, "f", KeyError)),
          "attempts", attempts(folder, "f"))
    try:
        ray.get(always_raise.remote(folder, "g"))
        print("unreachable")
    except ValueError:
        print("always raising, max_retries=2: attempts", attempts(folder, "g"))
    try:
        ray.get(raise_once.options(retry_exceptions=True, max_retries=0).remote(folder, "h", ValueError))
        print("unreachable")
    except ValueError:
        print("retry_exceptions=True, max_retries=0: attempts", attempts(folder, "h"))
    ray.shutdown()
