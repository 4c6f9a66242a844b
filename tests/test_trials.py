"""Experiments that report, checkpoint, resume mid-training and stop early, on real MPI ranks.

The heart of it is exactly once across kills: a sweep of 20-epoch experiments that checkpoint
every epoch is SIGKILL'd and SIGTERM'd at random moments and resumed each time; every
experiment finishes once, each attempt continues from the last journaled checkpoint (at most
the one epoch in flight at a kill is trained again), and the final metrics equal those of an
uninterrupted run.  Every epoch trained is counted in a file outside the sweep.
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import run_yrmpi
from test_sweep_run import events, journal, kill_tree, results_rows, start_sweep, wait_for

from yrmpi.sweep import EXIT_INTERRUPTED, TrialStopped

pytestmark = pytest.mark.mpi

ENTRY = '''
import os
import time

import numpy as np


def problem(seed, n=128, d=6):
    rng = np.random.default_rng(1000 + seed)
    x = rng.normal(size=(n, d))
    return x, x @ rng.normal(size=d) + 0.1 * rng.normal(size=n)


class Trainer:
    def __init__(self, sleep=0.0, log=""):
        self.sleep = float(os.environ.get("TRIAL_SLEEP", sleep))
        self.log = log

    def fit(self, params, trial):
        print(f"fitting lr={params['lr']}", flush=True)
        x, y = problem(trial.seed)
        state, epoch = trial.restore()
        if state is None:
            state, epoch = {"w": np.zeros(x.shape[1]), "rng": np.random.default_rng(trial.seed)}, 0
        w, rng = state["w"], state["rng"]
        for epoch in range(int(epoch) + 1, params["epochs"] + 1):
            for batch in np.array_split(rng.permutation(len(y)), 4):
                w = w - params["lr"] * x[batch].T @ (x[batch] @ w - y[batch]) / len(batch)
            loss = np.mean((x @ w - y) ** 2)  # an np.float64: stored as a number
            if self.log:
                fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                os.write(fd, f"{trial.id} {trial.attempt} {epoch}\\n".encode())
                os.close(fd)
            time.sleep(self.sleep)
            state = {"w": w, "rng": rng, "loss": loss}
            trial.report({"loss": loss, "epoch": np.int64(epoch)}, step=epoch, checkpoint=state)
        return {"loss": float(state["loss"]), "w0": float(state["w"][0])}  # killed after the last report: restored
'''


def make_sweep(tmp_path: Path, lrs: list, epochs: int = 20, **overrides) -> Path:
    (tmp_path / "entry.py").write_text(ENTRY)
    doc = {
        "name": "trials",
        "entry": "entry.py:Trainer",
        "run": "fit",
        "init": {"sleep": 0.0, "log": str(tmp_path / "epochs.log")},
        "resources": {"supervisor": {"cpu": 500, "memory": 100}},
        "params": {"lr": lrs, "epochs": epochs},
        "metric": {"name": "loss", "mode": "min"},
        "output": str(tmp_path / "out"),
        "max_concurrent": 2,
        "status_interval": 0.5,
        "grace_period": 0.3,
    }
    doc.update(overrides)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


class _LocalTrial:
    """An uninterrupted run in this process: report does nothing, restore has nothing."""

    def __init__(self, seed: int) -> None:
        self.seed, self.id, self.attempt = seed, "local", 1

    def restore(self):
        return None, None

    def report(self, metrics, step=None, checkpoint=None):
        return None


def reference(tmp_path: Path, lr: float, epochs: int) -> dict:
    namespace: dict = {}
    exec(compile(ENTRY, "entry", "exec"), namespace)
    return namespace["Trainer"]().fit({"lr": lr, "epochs": epochs}, _LocalTrial(0))


def trained(tmp_path: Path) -> Counter:
    """Epochs trained per experiment, over all attempts."""
    path = tmp_path / "epochs.log"
    return Counter(line.split()[0] for line in path.read_text().splitlines()) if path.exists() else Counter()


def test_reports_are_journaled_curves_written_and_asha_stops_the_hopeless(tmp_path: Path) -> None:
    lrs = [0.3, 0.1, 0.03, 0.001, 0.0003, 0.0001]
    path = make_sweep(tmp_path, lrs, epochs=6, scheduler={"type": "asha", "max_t": 6, "grace_period": 1,
                                                          "reduction_factor": 2})
    done = run_yrmpi(["sweep", str(path)])
    assert done.returncode == 0, done.stdout + done.stderr
    out = tmp_path / "out"
    records = journal(out)
    reports = [r for r in records if r["event"] == "report"]
    rows = results_rows(out)
    by_id = {r["id"]: r for r in rows}
    stopped = {r["id"] for r in rows if r["status"] == "stopped"}
    assert stopped and all(r["status"] in ("finished", "stopped") for r in rows), done.stdout
    # Each report line: numbers (np.float64 / np.int64 stored as numbers), the decision, a checkpoint.
    assert all(type(r["metrics"]["loss"]) is float and type(r["metrics"]["epoch"]) is int for r in reports)
    assert {r["decision"] for r in reports} == {"continue", "stop"}
    assert all(r["checkpoint"]["kind"] == "pickle" for r in reports)
    for exp in stopped:  # stopped at the report that says so, recorded with its last metrics
        last = [r for r in reports if r["exp"] == exp][-1]
        assert last["decision"] == "stop" and float(by_id[exp]["metric.loss"]) == last["metrics"]["loss"]
    # curves.csv: one row per report, plain numbers.
    with open(out / "curves.csv", newline="") as f:
        curves = list(csv.DictReader(f))
    assert len(curves) == len(reports)
    assert not any("np." in v or "array(" in v for row in curves + rows for v in row.values())
    # Old checkpoints are pruned: at most two per experiment remain.
    assert all(len(os.listdir(d)) <= 2 for d in (out / "checkpoints").iterdir())
    # The best agrees everywhere: summary, the table's first row, the last status line.
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best"]["id"] == rows[0]["id"] == summary["ranking"][0]
    status = [line for line in done.stdout.splitlines() if "done" in line and "best loss=" in line][-1]
    assert f"({rows[0]['id']})" in status
    # Output lines of a supervisor say which experiment they come from.
    for e in rows:
        assert f"(Trainer {e['id']} pid=" in done.stdout, done.stdout
    # A rerun never runs a stopped experiment again.
    again = run_yrmpi(["sweep", str(path)])
    assert again.returncode == 0 and "nothing left to run" in again.stdout
    assert events(journal(out), "started") == events(records, "started")


def _chaos(tmp_path: Path, kills_wanted: int, n_exp: int, sleep: float) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    epochs = 20
    lrs = [0.05 * (i + 1) for i in range(n_exp)]
    path = make_sweep(tmp_path, lrs, epochs=epochs)
    out = tmp_path / "out"
    kills = terms = 0
    for attempt in range(kills_wanted * 3):
        if kills + terms >= kills_wanted:
            break
        before = len([r for r in journal(out) if r["event"] == "report"])
        proc = start_sweep(path, tmp_path, f"run{attempt}", TRIAL_SLEEP=str(sleep))
        wait_for(lambda before=before: len([r for r in journal(out) if r["event"] == "report"]) > before,
                 f"kill {attempt} (seed {seed}): a report", proc, limit=120)
        time.sleep(rng.uniform(0, 4 * sleep))
        if proc.poll() is not None:
            break
        if rng.random() < 0.3:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=120)
            assert code in (0, EXIT_INTERRUPTED), f"seed {seed}: SIGTERM gave {code}"
            terms += 1
        else:
            kill_tree(proc)
            kills += 1
    assert kills + terms >= kills_wanted, f"seed {seed}: finished after {kills} kills and {terms} SIGTERMs"
    done = run_yrmpi(["sweep", str(path)], timeout=300, env=None)
    assert done.returncode == 0, f"seed {seed}\n{done.stdout}\n{done.stderr}"

    records = journal(out)
    rows = results_rows(out)
    assert len(rows) == n_exp and {r["status"] for r in rows} == {"finished"}, f"seed {seed}"
    assert events(records, "finished") == Counter({r["id"]: 1 for r in rows}), f"seed {seed}"
    counts = trained(tmp_path)
    for row in rows:
        exp = row["id"]
        restarts = int(row["restarts"])
        # Each start after the first continued from the last journaled checkpoint: at most the
        # epoch in flight at the kill was trained again.
        assert epochs <= counts[exp] <= epochs + restarts, f"seed {seed}: {exp} trained {counts[exp]} epochs " \
            f"with {restarts} restarts"
        want = reference(tmp_path, float(row["param.lr"]), epochs)
        assert float(row["metric.loss"]) == want["loss"] and float(row["metric.w0"]) == want["w0"], f"seed {seed}"
        # The journaled steps of the last attempt start right after the checkpoint it restored.
        steps = [r["step"] for r in records if r["event"] == "report" and r["exp"] == exp]
        assert sorted(set(steps)) == list(range(1, epochs + 1)), f"seed {seed}: {exp} {steps}"
    redone = sum(counts.values()) - n_exp * epochs
    print(f"chaos seed {seed}: {kills} SIGKILLs + {terms} SIGTERMs, {redone} epochs trained twice "
          f"of {n_exp * epochs}")


def test_kills_resume_from_the_last_checkpoint_exactly_once(tmp_path: Path) -> None:
    _chaos(tmp_path, kills_wanted=3, n_exp=3, sleep=0.1)


@pytest.mark.slow
def test_ten_random_kills_resume_from_the_last_checkpoint_exactly_once(tmp_path: Path) -> None:
    _chaos(tmp_path, kills_wanted=10, n_exp=6, sleep=0.1)


def test_a_trial_outside_a_sweep_says_so() -> None:
    from yrmpi.sweep import Trial

    with pytest.raises(RuntimeError, match="running sweep"):
        Trial(id="x", seed=0, workers=0).report({"loss": 1.0})
    assert Trial(id="x", seed=0, workers=0).restore() == (None, None)
    assert issubclass(TrialStopped, Exception)


WORKER_ENTRY = '''
import yr


@yr.instance
class W:
    def go(self, trial):
        for step in range(1, 4):
            trial.report({"loss": 1.0 / step}, step=step)
        return 1


class S:
    def run(self, params, trial):
        w = W.options(trial.worker_options).invoke()
        yr.get(w.go.invoke(trial), timeout=60)
        return {"done": True}
'''


def test_a_worker_given_the_trial_reports_through_its_supervisor(tmp_path: Path) -> None:
    (tmp_path / "w.py").write_text(WORKER_ENTRY)
    doc = {"name": "wr", "entry": "w.py:S", "run": "run", "workers": 1,
           "resources": {"supervisor": {"cpu": 100, "memory": 100}, "worker": {"cpu": 500, "memory": 100}},
           "params": {"x": [1, 2]}, "metric": {"name": "loss", "mode": "min"}, "output": str(tmp_path / "out")}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc))
    done = run_yrmpi(["sweep", str(path)])
    assert done.returncode == 0, done.stdout + done.stderr
    records = journal(tmp_path / "out")
    assert Counter(r["exp"] for r in records if r["event"] == "report") == Counter(
        {r["id"]: 3 for r in results_rows(tmp_path / "out")})
    assert {float(r["metric.loss"]) for r in results_rows(tmp_path / "out")} == {1 / 3}  # last report + run's dict
