"""The issue's tree across nodes: 2 supervisors (cpu=100) x K workers (cpu=1000, pack), each
worker group allreducing; plus what a remote rank sees of the launcher's environment.

    yrmpi run -n 12 --host nodea:4,nodeb:4,nodec:4 tests/multinode/jobs/tree_probe.py 4
Prints one PROBE line (JSON): the node of each supervisor and of each group's workers, whether
every allreduce was exact, and the YRMPI_PROBE_MARK each host rank saw.
"""
import json
import os
import socket
import sys

import numpy as np

import yrmpi as yr


@yr.instance(invoke_options=yr.InvokeOptions(cpu=1000))
class Worker:
    def step(self):
        size = yr.collective.size()
        out = yr.collective.allreduce(np.full(100_000, float(yr.collective.rank() + 1)))
        return socket.gethostname(), bool(np.all(out == size * (size + 1) / 2)), os.environ.get("YRMPI_PROBE_MARK")


@yr.instance(invoke_options=yr.InvokeOptions(cpu=100))
class Supervisor:
    def __init__(self, k):
        self.workers = [Worker.invoke() for _ in range(k)]

    def run(self):
        return socket.gethostname(), yr.get([w.step.invoke() for w in self.workers], timeout=120)


def main():
    k = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    yr.init()
    sups = [Supervisor.invoke(k) for _ in range(2)]
    out = yr.get([s.run.invoke() for s in sups], timeout=180)
    print("PROBE", json.dumps({"supervisors": [host for host, _ in out],
                               "groups": [[h for h, _, _ in rows] for _, rows in out],
                               "exact": all(ok for _, rows in out for _, ok, _ in rows),
                               "marks": sorted({(h, m) for _, rows in out for h, _, m in rows}),
                               "nodes": yr.resources()["total"]["nodes"]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
