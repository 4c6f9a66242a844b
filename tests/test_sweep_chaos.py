"""Chaos: a sweep stopped at random moments, start-up included, by a stop signal or by SIGKILL
of every process, and resumed each time until it finishes.

What must hold whatever the moment: no result lost, none recorded twice, the final metrics
those of an uninterrupted run, and never exit 0 while work is left (a batch script requeues
only on 75 or 69, so a false 0 would leave the sweep unfinished for good).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import run_yrmpi
from test_sweep_run import events, journal, kill_tree, make_sweep, results_rows, start_sweep

from yrmpi.sweep import EXIT_INTERRUPTED, EXIT_LOST

pytestmark = pytest.mark.mpi

XS, SEEDS = list(range(5)), [0, 1]  # 10 experiments, 0.3 s each, 2 at a time: ~2 s of work


def _chaos(tmp_path: Path, stops: int) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    path = make_sweep(tmp_path, xs=XS, seeds=SEEDS, init={"sleep": 0.3})
    out = tmp_path / "out"
    total = len(XS) * len(SEEDS)
    codes = []
    started_before = 0
    for attempt in range(stops):
        proc = start_sweep(path, tmp_path, f"run{attempt}")
        time.sleep(rng.uniform(0.0, 2.5))  # from before MPI is up to the middle of the sweep
        how = rng.choice(("SIGTERM", "SIGKILL"))
        if how == "SIGTERM":
            proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                kill_tree(proc)
                pytest.fail(f"seed {seed}: the sweep did not stop after SIGTERM ({attempt})")
        else:
            kill_tree(proc)
            rc = proc.wait()
        records = journal(out) if out.exists() else []
        done = sum(events(records, "finished").values())
        started = sum(events(records, "started").values())
        codes.append((how, rc, done))
        err = (tmp_path / f"run{attempt}.err").read_text()[-2000:]
        if done < total:
            assert rc != 0, f"seed {seed}: exit 0 with {total - done} experiments left ({how})\n{err}"
        if how == "SIGTERM" and done < total and rc == -signal.SIGTERM:
            # Killed by the signal itself: only possible before the interpreter reached yrmpi's
            # first line (core/startup.py holds stop signals from there on), so nothing ran.
            assert started == started_before, f"seed {seed}: died of SIGTERM after experiments started\n{err}"
        elif how == "SIGTERM" and done < total:
            assert rc in (EXIT_INTERRUPTED, EXIT_LOST), f"seed {seed}: {how} -> {rc}\n{err}"
        started_before = started
    final = run_yrmpi(["sweep", str(path)])
    assert final.returncode == 0, f"seed {seed}, {codes}\n{final.stdout}\n{final.stderr}"

    records = journal(out)
    rows = results_rows(out)
    assert len(rows) == total and {r["status"] for r in rows} == {"finished"}, f"seed {seed}, {codes}"
    assert events(records, "finished") == Counter({r["id"]: 1 for r in rows}), f"seed {seed}, {codes}"
    # the metrics are those of an uninterrupted run: the worker's value 10 x + seed
    queued = {r["exp"]: r for r in records if r["event"] == "queued"}
    for r in records:
        if r["event"] == "finished":
            q = queued[r["exp"]]
            assert r["metrics"]["loss"] == 10.0 * q["params"]["x"] + q["seed"], f"seed {seed}: {r}"


def test_stops_at_random_moments_lose_and_repeat_nothing(tmp_path: Path) -> None:
    _chaos(tmp_path, stops=3)


@pytest.mark.slow
def test_a_dozen_stops_at_random_moments_lose_and_repeat_nothing(tmp_path: Path) -> None:
    _chaos(tmp_path, stops=12)
