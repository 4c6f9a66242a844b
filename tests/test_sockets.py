"""Which sockets a one-node job opens: none of yrmpi's own, and with shared memory only
(`btl self,sm`, set by the launcher) no rank listens on a TCP port either."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.mpi

JOB = """
import os

import yrmpi as yr


def listening():
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    found = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with open(table) as f:
            next(f)
            found += sum(1 for line in f if line.split()[3] == "0A" and line.split()[9] in inodes)
    return found


@yr.instance(invoke_options=yr.InvokeOptions(cpu=1000))
class Probe:
    def listening(self):
        return listening()


if __name__ == "__main__":
    yr.init()
    probes = [Probe.invoke() for _ in range(2)]
    print("LISTENING", [listening()] + yr.get([p.listening.invoke() for p in probes]))
    yr.finalize()
"""


def test_no_rank_of_a_one_node_job_listens_on_a_tcp_port(run_job):
    proc = run_job(JOB, n=3)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "LISTENING [0, 0, 0]" in proc.stdout, proc.stdout + proc.stderr[-2000:]


def test_a_btl_the_user_chose_wins(run_job):
    proc = run_job(JOB, n=3, OMPI_MCA_btl="self,sm,tcp")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "LISTENING [0, 0, 0]" not in proc.stdout, proc.stdout  # TCP is on again: every rank listens
