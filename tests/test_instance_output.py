"""What instances write reaches the job's output whole: bytes, very long lines, forked children."""

from __future__ import annotations

import re

import pytest

from yrmpi.roles.output import LINE_MAX

pytestmark = pytest.mark.mpi

JOB = """
import os
import sys

import yrmpi as yr


@yr.instance
class Writer:
    def write(self, n):
        sys.stdout.buffer.write(b"raw bytes \\xff here\\n")
        print("x" * n)
        return n

    def fork(self):
        pid = os.fork()
        if pid == 0:
            return "child"  # returns into yrmpi: it must end there, not answer the call
        return ("parent", os.waitpid(pid, 0)[1])


if __name__ == "__main__":
    yr.init()
    w = Writer.invoke()
    print("wrote", yr.get(w.write.invoke(1_000_000)), file=sys.stderr)
    print("forked", yr.get(w.fork.invoke(), timeout=30), file=sys.stderr)
    print("after", yr.get(w.write.invoke(3)), file=sys.stderr)
    yr.finalize()
"""


def test_bytes_long_lines_and_forked_children(run_job):
    proc = run_job(JOB, n=3)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    # sys.stdout.buffer works inside an instance, and its bytes are prefixed like text
    assert any(line.startswith("(Writer pid=") and line.endswith("raw bytes \ufffd here") for line in lines), lines[:5]
    # a 1 MB line arrives whole, split into lines the launcher forwards fast
    assert sum(line.count("x") for line in lines) == 1_000_000 + 3
    assert max(len(line) for line in lines) <= LINE_MAX + 100
    # the forked child ended where it returned into yrmpi; the parent's answer is the call's
    assert "forked ('parent', 0)" in proc.stderr
    assert "after 3" in proc.stderr
    assert "a process forked inside an instance's call returned into yrmpi" in proc.stderr


TAGGED = """
import yrmpi as yr


@yr.instance
class Worker:
    def hello(self):
        print("hello from a worker")
        return 1


class Sup:
    def start(self):
        return yr.get(Worker.invoke().hello.invoke())


Sup.__qualname__ = "Sup e01e4e47e773"  # as a sweep names an experiment's supervisor


if __name__ == "__main__":
    yr.init()
    print("done", yr.get(yr.instance(Sup).invoke().start.invoke()))
    yr.finalize()
"""


def test_workers_of_a_tagged_supervisor_carry_its_tag(run_job):
    proc = run_job(TAGGED, n=3)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"^\(Worker e01e4e47e773 pid=\d+, rank=\d+\) hello from a worker$", proc.stdout, re.M), proc.stdout
