"""A host rank that stops (SIGSTOP) while it holds an instance: rank 0's liveness watch must
declare it failed, recover the instance elsewhere, and the job must end.

    yrmpi run -n 3 tests/multinode/jobs/hung_rank.py      (YRMPI_LIVENESS_S=3 for a quick run)
Prints PID (the stopped rank's process), then RECOVERED or ERROR with the seconds it took, DONE.
"""
import os
import signal
import sys
import time

import yrmpi as yr


@yr.instance(invoke_options=yr.InvokeOptions(cpu=1000, recover_retry_times=1))
class Stateful:
    def where(self):
        return os.getpid()


def thread_state(pid: int, tid: str) -> str:
    with open(f"/proc/{pid}/task/{tid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def wait_until_stopped(pid: int) -> None:
    """kill() returns before the target has stopped; a call sent in that window is still served."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if all(thread_state(pid, tid) in ("T", "t") for tid in os.listdir(f"/proc/{pid}/task")):
            return
        time.sleep(0.01)
    raise RuntimeError(f"rank process {pid} did not stop within 10 s of SIGSTOP")


def main():
    yr.init()
    h = Stateful.invoke()
    pid = yr.get(h.where.invoke(), timeout=60)
    print("PID", pid, flush=True)
    t0 = time.monotonic()
    os.kill(pid, signal.SIGSTOP)  # (same node) the whole rank stops: no thread answers
    wait_until_stopped(pid)
    try:
        new = yr.get(h.where.invoke(), timeout=60)
        print("RECOVERED", new != pid, f"{time.monotonic() - t0:.1f}", flush=True)
    except Exception as exc:  # noqa: BLE001 - report what the driver saw
        print("ERROR", f"{time.monotonic() - t0:.1f}", f"{type(exc).__name__}: {exc}"[:300], flush=True)
    try:  # the instance is usable after it moved
        print("AGAIN", yr.get(h.where.invoke(), timeout=30) != pid, flush=True)
    except Exception as exc:  # noqa: BLE001
        print("AGAIN-ERROR", f"{type(exc).__name__}: {exc}"[:300], flush=True)
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
