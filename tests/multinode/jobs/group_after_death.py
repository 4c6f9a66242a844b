"""A worker group that spans two nodes, one member's rank SIGKILLed, then a new group across
the nodes: its allreduce must be exact (groups carve again after a rank death, across nodes too).

    yrmpi run -n 6 --host nodea:3,nodeb:3 tests/multinode/jobs/group_after_death.py
Prints one PROBE line (JSON): each group's nodes and whether its allreduce was exact.
"""
import json
import os
import signal
import socket
import sys

import numpy as np

import yrmpi as yr


def on_node(node):
    """A worker that must run on `node` (a required affinity on the rank's hostname label)."""
    where = yr.LabelOperator(yr.OperatorType.LABEL_IN, "hostname", [node])
    return yr.InvokeOptions(cpu=1000, schedule_affinities=[
        yr.Affinity(yr.AffinityKind.RESOURCE, yr.AffinityType.REQUIRED, [where])])


@yr.instance
class Worker:
    def step(self):
        size = yr.collective.size()
        out = yr.collective.allreduce(np.full(10_000, float(yr.collective.rank() + 1)))
        return socket.gethostname(), bool(np.all(out == size * (size + 1) / 2))

    def die(self):
        os.kill(os.getpid(), signal.SIGKILL)


@yr.instance(invoke_options=yr.InvokeOptions(cpu=100))
class Supervisor:
    def group(self):
        self.workers = [Worker.options(on_node(node)).invoke() for node in ("nodea", "nodeb")]
        return yr.get([w.step.invoke() for w in self.workers], timeout=120)

    def kill_one(self):
        try:
            yr.get(self.workers[1].die.invoke(), timeout=60)
        except yr.YRError as exc:
            return type(exc).__name__
        return "survived"


def main():
    yr.init()
    sup = Supervisor.invoke()
    before = yr.get(sup.group.invoke(), timeout=180)
    died = yr.get(sup.kill_one.invoke(), timeout=120)
    after = yr.get(sup.group.invoke(), timeout=180)
    print("PROBE", json.dumps({"before": before, "died": died, "after": after}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
