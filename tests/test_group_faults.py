"""Faults that groups of workers must survive, end to end: a sweep that loses a worker rank
mid-run, the root cause of a group's failure reaching the supervisor, and remote tracebacks
that show the user's own code.

(The fail-fast and rank-death checks themselves run in tests/jobs/collective_checks.py and
tests/jobs/fault_checks.py, in the launches that test_collective.py and test_faults.py share.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, job_env

pytestmark = pytest.mark.mpi

STEPS = 20
WORKERS = 2

ENTRY = '''
import os
import time

import numpy as np

import yr


@yr.instance
class GradWorker:
    def steps(self, x, n, folder):
        me = yr.collective.rank()
        open(os.path.join(folder, f"worker-{os.getpid()}"), "w").close()  # the test kills one of these
        total = 0.0
        for _ in range(n):
            total += float(yr.collective.allreduce(np.full(16, float(x * (me + 1))))[0])
            time.sleep(0.04)
        return total


class Sup:
    def __init__(self, folder):
        self.folder = folder

    def run(self, params, trial):
        workers = [GradWorker.options(trial.worker_options).invoke() for _ in range(trial.workers)]
        try:
            totals = yr.get([w.steps.invoke(params["x"], params["steps"], self.folder) for w in workers],
                            timeout=120)
        finally:
            for w in workers:
                w.terminate(is_sync=True)
        assert len(set(totals)) == 1, totals
        return {"loss": totals[0], "attempt": trial.attempt}
'''


def _journal(out: Path) -> list[dict]:
    path = out / "journal.jsonl"
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:  # a line being written
            pass
    return records


@pytest.mark.slow
def test_a_sweep_that_loses_a_worker_rank_mid_allreduce_finishes_every_experiment_once(tmp_path: Path) -> None:
    """Four data-parallel experiments (a supervisor and a 2-worker allreduce group each, two at
    once); one worker rank is SIGKILLed mid-run. The experiment that ran there fails, is retried
    on new workers in a new group (carved after the death), and every experiment finishes
    exactly once with the metrics a run without the kill gives."""
    folder = tmp_path / "pids"
    folder.mkdir()
    (tmp_path / "entry.py").write_text(ENTRY)
    xs = [1, 2, 3, 4]
    doc = {
        "name": "dp-kill", "entry": "entry.py:Sup", "run": "run", "init": {"folder": str(folder)},
        "workers": WORKERS,
        "resources": {"supervisor": {"cpu": 100, "memory": 100}, "worker": {"cpu": 1000, "memory": 100}},
        "params": {"x": xs, "steps": STEPS}, "seeds": [0], "retries": 1,
        "metric": {"name": "loss", "mode": "min"}, "output": str(tmp_path / "out"),
        "max_concurrent": 2, "status_interval": 0.5, "grace_period": 0.3,
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    out = tmp_path / "out"
    with open(tmp_path / "run.out", "w") as stdout, open(tmp_path / "run.err", "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "yrmpi", "sweep", str(path), "-n", "6"],
                                stdout=stdout, stderr=stderr, env=job_env(), cwd=ROOT)
    try:
        deadline = time.monotonic() + 150  # a loaded machine launches slowly
        while not list(folder.iterdir()):
            assert proc.poll() is None, "the sweep ended before any worker started"
            assert time.monotonic() < deadline, "no worker started"
            time.sleep(0.02)
        time.sleep(0.3)  # a few allreduce steps in
        victim = int(sorted(folder.iterdir())[0].name.split("-")[1])
        os.kill(victim, signal.SIGKILL)
        code = proc.wait(timeout=120)
    except BaseException:
        proc.kill()
        proc.wait()
        print((tmp_path / "run.out").read_text()[-3000:], (tmp_path / "run.err").read_text()[-3000:])
        raise
    text = (tmp_path / "run.out").read_text() + (tmp_path / "run.err").read_text()
    assert code == 0, text[-4000:]
    records = _journal(out)
    finished = [r for r in records if r["event"] == "finished"]
    assert Counter(r["exp"] for r in finished) == Counter({r["exp"]: 1 for r in finished}), finished
    assert len(finished) == len(xs), text[-4000:]
    failed = [r for r in records if r["event"] == "failed"]
    assert len(failed) >= 1, "the experiment on the killed rank failed once"
    # the journal records the root cause (the worker that died), not the group change it caused
    assert "died" in failed[0]["error"] and "GroupChangedError" not in failed[0]["error"], failed[0]["error"]
    per_step = sum(range(1, WORKERS + 1))  # what an unkilled run gives: x * (1 + 2) per step
    losses = sorted(r["metrics"]["loss"] for r in finished)
    assert losses == [float(STEPS * per_step * x) for x in xs], losses
    assert any(r["metrics"]["attempt"] == 2 for r in finished), "the failed experiment was retried and finished"


def test_a_remote_traceback_shows_the_users_file_and_source_line(run_job) -> None:
    """A worker's exception: the caller's traceback names the job file and shows the failing
    source line of the class sent by value, with yrmpi's own frames trimmed to one line."""
    proc = run_job("""
        import yrmpi as yr

        @yr.instance
        class Model:
            def step(self, rows):
                weights = [[0.0] * 5 for _ in range(6)]
                return multiply(rows, weights)


        def multiply(a, b):
            if len(a[0]) != len(b):
                raise RuntimeError(f"mat1 and mat2 shapes cannot be multiplied ({len(a)}x{len(a[0])} and {len(b)}x5)")
            return a

        yr.init()
        model = Model.invoke()
        try:
            yr.get(model.step.invoke([[1.0] * 4] * 3))
        except RuntimeError as exc:
            print("TRACEBACK-START")
            print(str(exc))
            print("TRACEBACK-END")
        yr.finalize()
    """, n=2, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout.split("TRACEBACK-START")[1].split("TRACEBACK-END")[0]
    assert "job.py" in text and "<dynamic-code>" not in text, text
    assert "return multiply(rows, weights)" in text, text  # the source lines of the user's frames
    assert 'raise RuntimeError(f"mat1 and mat2 shapes' in text, text
    assert "yrmpi/roles/host.py" not in text and "interrupt.py" not in text, text
    assert "[yrmpi: called Model.step" in text and "rank 1" in text, text
    lines = text.splitlines()
    first_user = next(i for i, line in enumerate(lines) if "job.py" in line)
    assert "[yrmpi: called" in lines[first_user - 1], text  # the user's frames come first
