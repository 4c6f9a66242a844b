"""Refs and handles carry the identity of the job that made them: another job refuses them at once."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.mpi

JOB = """
import pickle
import sys

import yrmpi as yr


@yr.instance
class Box:
    def value(self):
        return "from the job that made it"


if __name__ == "__main__":
    yr.init()
    path = sys.argv[1]
    if sys.argv[2] == "write":
        box = Box.invoke()
        ref = box.value.invoke()
        yr.get(ref)
        for suffix, obj in ((".ref", ref), (".box", box)):
            with open(path + suffix, "wb") as f:
                pickle.dump(obj, f)
    else:
        for suffix in (".ref", ".box"):
            with open(path + suffix, "rb") as f:
                try:
                    print("loaded:", pickle.load(f))
                except yr.YRValueError as exc:
                    print("refused:", exc)
    yr.finalize()
"""


def test_a_ref_and_a_handle_from_another_job_are_refused(run_job, tmp_path):
    blob = tmp_path / "ref.pickle"
    first = run_job(JOB, n=3, args=(str(blob), "write"))
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_job(JOB, n=3, args=(str(blob), "read"))
    assert second.returncode == 0, second.stderr[-3000:]
    out = second.stdout
    assert "refused: this ObjectRef belongs to another job" in out, out + second.stderr
    assert "refused: this instance handle belongs to another job" in out, out + second.stderr
    assert "loaded:" not in out
