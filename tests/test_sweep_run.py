"""`yrmpi sweep` end to end on real MPI ranks: results, journal, resume, signals, failures.

Every sweep here self-launches (`python -m yrmpi sweep FILE.yaml`), as a user would; the
experiments are tiny so the whole file stays within a few minutes on two cores.
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, job_env, run_yrmpi

from yrmpi.sweep import EXIT_FAILED, EXIT_INTERRUPTED, Journal, load, read_journal, write_resolved_config

pytestmark = pytest.mark.mpi

ENTRY = '''
import os
import time

import yr


@yr.instance
class Worker:
    def work(self, x, seed, sleep):
        time.sleep(sleep)
        return 10.0 * x + seed


class Sup:
    """Behaviour comes from init (not params), so changing it keeps experiment ids."""

    def __init__(self, sleep=0.05, fail_on=None, exit_on=None, hang_on=None):
        if isinstance(sleep, str):  # "env:NAME": read at run time, so a resume may change it (init may not)
            sleep = float(os.environ[sleep[len("env:"):]])
        self.sleep, self.fail_on, self.exit_on, self.hang_on = sleep, fail_on, exit_on, hang_on

    def run(self, params, trial):
        x = params["x"]
        if x == self.fail_on:
            raise ValueError(f"boom at x={x}")
        if x == self.exit_on:
            yr.exit()
        sleep = 6.0 if x == self.hang_on else self.sleep  # longer than the timeout below
        workers = [Worker.options(trial.worker_options).invoke() for _ in range(trial.workers)]
        values = yr.get([w.work.invoke(x, trial.seed, sleep) for w in workers], timeout=120)
        return {"loss": sum(values) / len(values), "attempt": trial.attempt, "workers": len(values),
                "trial_id": trial.id}
'''


def make_sweep(tmp_path: Path, xs: list, seeds: list, **overrides) -> Path:
    """A sweep YAML (+ its entry file) in tmp_path; returns the YAML path."""
    (tmp_path / "entry.py").write_text(ENTRY)
    doc = {
        "name": "t",
        "entry": "entry.py:Sup",
        "run": "run",
        "workers": 1,
        "resources": {"supervisor": {"cpu": 100, "memory": 100}, "worker": {"cpu": 500, "memory": 100}},
        "params": {"x": xs},
        "seeds": seeds,
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


def journal(out: Path) -> list[dict]:
    records, _ = read_journal(out)
    return records


def events(records: list[dict], event: str) -> Counter:
    return Counter(r["exp"] for r in records if r["event"] == event)


def results_rows(out: Path) -> list[dict]:
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def start_sweep(yaml_path: Path, tmp_path: Path, tag: str, *args: str, **env: str) -> subprocess.Popen:
    """A running `python -m yrmpi sweep` with its output in files (no pipe can fill up)."""
    out = open(tmp_path / f"{tag}.out", "w")
    err = open(tmp_path / f"{tag}.err", "w")
    return subprocess.Popen([sys.executable, "-m", "yrmpi", "sweep", str(yaml_path), *args],
                            stdout=out, stderr=err, env=job_env(**env), cwd=ROOT)


def wait_for(predicate, what: str, proc: subprocess.Popen | None = None, limit: float = 90) -> None:
    """Poll a condition of a running sweep; the limit only turns a hang into a failure."""
    deadline = time.monotonic() + limit
    while not predicate():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the sweep exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


def _children() -> dict[int, list[int]]:
    table: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        table.setdefault(int(fields[1]), []).append(int(entry))
    return table


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (the launcher, mpiexec, every rank)."""
    table, out, todo = _children(), [pid], [pid]
    while todo:
        for child in table.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the whole sweep at once. Open MPI puts each rank in its own process group, so
    killing the launcher's group would leave the ranks running: kill every process of the tree."""
    pids = process_tree(proc.pid)
    for pid in reversed(pids):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    wait_for(lambda: not any(alive(p) for p in pids), "the killed ranks to disappear")


def rank_pids(proc: subprocess.Popen) -> list[int]:
    """The MPI ranks of a self-launched sweep (python processes under mpiexec)."""
    pids = []
    for pid in process_tree(proc.pid)[1:]:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"sweep" in argv and b"-m" in argv and "python" in os.path.basename(argv[0].decode()):
            pids.append(pid)
    return pids


# -- a whole sweep ----------------------------------------------------------------------------------
def test_sweep_end_to_end(tmp_path: Path) -> None:
    path = make_sweep(tmp_path, xs=[1, 2, 3], seeds=[0, 1], init={"sleep": 0.05})
    out = tmp_path / "out"
    done = run_yrmpi(["sweep", str(path)])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "launching" in done.stdout and "capped at 2 by max_concurrent" in done.stdout
    assert "best: " in done.stdout and "x=1" in done.stdout.split("best: ")[1].splitlines()[0]

    rows = results_rows(out)
    assert len(rows) == 6 and {r["status"] for r in rows} == {"finished"}
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4", "5", "6"]
    assert [float(r["metric.loss"]) for r in rows] == [10, 11, 20, 21, 30, 31]
    assert rows[0]["param.x"] == "1" and rows[0]["seed"] == "0"

    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"finished": 6, "stopped": 0, "running": 0, "queued": 0, "failed": 0}
    assert summary["best"]["params"] == {"x": 1} and summary["best"]["metrics"]["loss"] == 10
    assert summary["best"]["metrics"]["workers"] == 1 and summary["best"]["metrics"]["attempt"] == 1
    assert summary["best"]["metrics"]["trial_id"] == summary["best"]["id"]

    records = journal(out)
    ids = {r["id"] for r in rows}
    for event in ("queued", "started", "finished"):
        assert events(records, event) == Counter({i: 1 for i in ids}), event
    assert not events(records, "failed") and not events(records, "interrupted")
    for r in records:
        if r["event"] == "started":
            assert r["attempt"] == 1
    assert yaml.safe_load((out / "config.yaml").read_text())["name"] == "t"

    # Nothing left: a rerun reports without launching MPI, and `yrmpi report` agrees.
    again = run_yrmpi(["sweep", str(path)])
    assert again.returncode == 0 and "nothing left to run" in again.stdout and "launching" not in again.stdout
    rep = run_yrmpi(["report", str(out)])
    assert rep.returncode == 0 and "6 finished" in rep.stdout
    assert rep.stdout.strip() in done.stdout


def test_dry_run_prints_the_plan_without_mpi(tmp_path: Path) -> None:
    path = make_sweep(tmp_path, xs=[1, 2, 3], seeds=[0, 1], max_concurrent=None)
    done = run_yrmpi(["sweep", str(path), "--dry-run", "--max-concurrent", "3", "--set", "workers=2"])
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "sweep t: 6 experiments (3 x x 2 seeds)" in text
    assert "1 x 100 + 2 x 500 = 1100 millicores" in text and "3 at once" in text and "2 waves" in text
    table = text.split("\nwave ")[1].splitlines()[1:7]
    assert [line.split()[0] for line in table] == ["1", "1", "1", "2", "2", "2"]  # wave of each experiment
    assert "a local launch:" in text
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("change, expected", [
    ({"workres": 1}, "sweep.yaml: workres: found unknown key 'workres'"),
    ({"entry": "missing.py:Sup"}, "sweep.yaml: entry: found \"missing.py:Sup\" but there is no such file"),
    ({"resources": {"worker": {"cpu": 5000}}}, "sweep.yaml: resources.worker: found a worker that fits no rank"),
])
def test_config_errors_are_one_line_and_exit_2(tmp_path: Path, change: dict, expected: str) -> None:
    path = make_sweep(tmp_path, xs=[1], seeds=[0], **change)
    done = run_yrmpi(["sweep", str(path)])
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(str(path.parent)) and expected in lines[0], done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert "launching" not in done.stdout


# -- failures -------------------------------------------------------------------------------------
def test_failing_supervisors_are_retried_then_recorded_failed(tmp_path: Path) -> None:
    path = make_sweep(tmp_path, xs=[1, 2, 3, 4, 5], seeds=[0], retries=1, timeout=4, max_concurrent=3,
                      init={"fail_on": 2, "exit_on": 3, "hang_on": 4})
    out = tmp_path / "out"
    done = run_yrmpi(["sweep", str(path)])
    assert done.returncode == EXIT_FAILED == 3, done.stdout + done.stderr  # ran to the end, some failed
    assert "3 experiments failed" in done.stdout

    rows = {int(r["param.x"]): r for r in results_rows(out)}
    assert rows[1]["status"] == rows[5]["status"] == "finished"
    assert [rows[x]["status"] for x in (2, 3, 4)] == ["failed"] * 3
    assert "ValueError: boom at x=2" in rows[2]["error"]
    assert "InstanceExitedError" in rows[3]["error"] and "yr.exit()" in rows[3]["error"]
    assert "timeout=4" in rows[4]["error"]
    assert all(rows[x]["attempts"] == "2" for x in (2, 3, 4))

    records = journal(out)
    failing = {rows[x]["id"] for x in (2, 3, 4)}
    assert events(records, "failed") == Counter({i: 2 for i in failing})
    assert events(records, "retried") == Counter({i: 1 for i in failing})
    assert events(records, "finished") == Counter({rows[1]["id"]: 1, rows[5]["id"]: 1})
    boom = [r for r in records if r["event"] == "failed" and r["exp"] == rows[2]["id"]][0]
    assert "in run" in boom["traceback"] and "ValueError: boom at x=2" in boom["traceback"]
    assert boom["error"].startswith("ValueError: boom")

    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["failed"] == 3 and summary["counts"]["finished"] == 2
    # A rerun does not retry experiments that used up their retries.
    again = run_yrmpi(["sweep", str(path)])
    assert again.returncode == EXIT_FAILED and "nothing left to run" in again.stdout


# -- crashes and signals --------------------------------------------------------------------------
def test_resume_after_sigkill_finishes_every_experiment_exactly_once(tmp_path: Path) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    path = make_sweep(tmp_path, xs=list(range(6)), seeds=[0, 1], init={"sleep": 0.5})
    out = tmp_path / "out"
    kills = 0
    for attempt in range(3):  # 12 experiments x 0.5 s, 2 at a time: a kill within 1 s hits mid-sweep
        before = sum(events(journal(out), "started").values())
        proc = start_sweep(path, tmp_path, f"run{attempt}")
        wait_for(lambda before=before: sum(events(journal(out), "started").values()) > before,
                 f"kill {attempt} (seed {seed}): an experiment to start", proc)
        time.sleep(rng.uniform(0, 1.0))
        if proc.poll() is not None:
            break
        kill_tree(proc)
        kills += 1
    assert kills >= 2, f"seed {seed}: the sweep finished before it could be killed twice"
    done = run_yrmpi(["sweep", str(path)])
    assert done.returncode == 0, f"seed {seed}\n{done.stdout}\n{done.stderr}"

    records = journal(out)
    rows = results_rows(out)
    assert len(rows) == 12 and {r["status"] for r in rows} == {"finished"}, f"seed {seed}"
    assert events(records, "finished") == Counter({r["id"]: 1 for r in rows}), f"seed {seed}"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["finished"] == 12 and len(summary["ranking"]) == 12
    # Whatever was running at a kill was journaled as interrupted on the next start, then rerun.
    for exp, starts in events(records, "started").items():
        assert events(records, "interrupted")[exp] == starts - 1, f"seed {seed}: {exp}"


@pytest.mark.parametrize("sig, target", [("SIGTERM", "launcher"), ("SIGUSR1", "ranks")])
def test_stop_signal_interrupts_then_resume_finishes(tmp_path: Path, sig: str, target: str) -> None:
    path = make_sweep(tmp_path, xs=[1, 2, 3, 4], seeds=[0], init={"sleep": "env:SLEEP"})
    out = tmp_path / "out"
    proc = start_sweep(path, tmp_path, "first", SLEEP="3")  # far longer than grace_period
    wait_for(lambda: sum(events(journal(out), "started").values()) == 2, "two experiments to start", proc)
    if target == "launcher":  # like `kill` or Slurm signalling the batch shell
        os.kill(proc.pid, getattr(signal, sig))
    else:  # like `srun --signal=USR1@60` or `scancel --signal=USR1 --full`: every rank gets it
        for pid in rank_pids(proc):
            os.kill(pid, getattr(signal, sig))
    try:
        assert proc.wait(timeout=120) == EXIT_INTERRUPTED, (tmp_path / "first.err").read_text()
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        pytest.fail("the sweep did not stop after the signal")
    text = (tmp_path / "first.out").read_text()
    assert "starting no more experiments" in text and "run the same command again to resume" in text

    records = journal(out)
    interrupted = events(records, "interrupted")
    assert len(interrupted) == 2 and not events(records, "finished") and not events(records, "failed")
    assert all("grace_period=0.3" in r["reason"] for r in records if r["event"] == "interrupted")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"finished": 0, "stopped": 0, "running": 0, "queued": 4, "failed": 0}

    done = run_yrmpi(["sweep", str(path)], env=job_env(SLEEP="0.05"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resuming: 0 finished" in done.stdout
    records = journal(out)
    assert events(records, "finished") == Counter({r["id"]: 1 for r in results_rows(out)})
    attempts = {r["exp"]: r["attempt"] for r in records if r["event"] == "started"}
    assert sorted(attempts.values()) == [1, 1, 2, 2]  # the interrupted two start a second time


def test_a_dead_host_rank_fails_its_experiment_which_is_retried(tmp_path: Path) -> None:
    """The launcher turns on ULFM: a killed rank fails what ran there, the sweep re-plans and finishes."""
    path = make_sweep(tmp_path, xs=[1, 2, 3, 4], seeds=[0], retries=1, init={"sleep": 1.0})
    out = tmp_path / "out"
    proc = start_sweep(path, tmp_path, "run")
    wait_for(lambda: sum(events(journal(out), "started").values()) == 2, "two experiments to start", proc)
    ranks = {}
    for pid in rank_pids(proc):
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
        ranks[int(env[b"OMPI_COMM_WORLD_RANK"])] = pid
    assert sorted(ranks) == [0, 1, 2]
    os.kill(ranks[2], signal.SIGKILL)  # it hosts the second experiment's worker
    try:
        assert proc.wait(timeout=120) == 0, (tmp_path / "run.out").read_text() + (tmp_path / "run.err").read_text()
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        pytest.fail("the sweep did not finish after losing a rank")
    text = (tmp_path / "run.out").read_text()
    assert "1 host rank(s) lost; now 1 experiment at once" in text
    records = journal(out)
    assert sum(events(records, "failed").values()) >= 1 and "rank 2" in text
    assert events(records, "finished") == Counter({r["id"]: 1 for r in results_rows(out)})


def test_report_skips_a_torn_last_line(tmp_path: Path) -> None:
    from yrmpi.sweep import expand

    path = make_sweep(tmp_path, xs=[1, 2], seeds=[0])
    config = load(path, check_entry=False)
    out = Path(config.output)
    write_resolved_config(out, config.to_dict())
    first, second = expand(config)
    j = Journal(out)
    j.queued_many([first, second])
    j.started(first.id, attempt=1)
    j.finished(first.id, {"loss": 0.5}, wall=1.0)
    j.started(second.id, attempt=1)
    with open(out / "journal.jsonl", "ab") as f:
        f.write(b'{"ts": 1.0, "event": "finished", "exp": "' + second.id.encode() + b'", "metr')
    done = run_yrmpi(["report", str(out)])
    assert done.returncode == 0, done.stderr
    assert "1 finished, 1 running" in done.stdout
    assert "ignored an incomplete last line" in done.stdout
    missing = run_yrmpi(["report", str(tmp_path / "nowhere")])
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("job", ["seed_sweep.yaml", "lr_sweep.yaml"])
def test_the_example_sweeps_in_jobs_run(tmp_path: Path, job: str) -> None:
    done = run_yrmpi(["sweep", str(ROOT / "jobs" / job), "-o", str(tmp_path / "out")])
    assert done.returncode == 0, done.stdout + done.stderr
    rows = results_rows(tmp_path / "out")
    assert len(rows) == 6 and {r["status"] for r in rows} == {"finished"}
    assert all(float(r["metric.loss"]) >= 0 for r in rows) and "best: " in done.stdout
