"""Shared test helpers: run a real yrmpi job on real MPI ranks and capture its output."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def job_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", PMIX_MCA_psec="native",
               PYTHONUNBUFFERED="1")
    env.pop("YRMPI_LAUNCHED", None)
    # The test machine runs up to 12 ranks on 2 cores, and a rank importing torch holds the GIL in
    # native code for seconds: the 10 s liveness default could fail a live rank there. The tests of
    # liveness itself set their own limit.
    env.setdefault("YRMPI_LIVENESS_S", "60")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def run_yrmpi(args: list[str], timeout: float = 120, env: dict | None = None,
              cwd: str | Path | None = None) -> subprocess.CompletedProcess:
    """`yrmpi ARGS` (as `python -m yrmpi ARGS`), with a hard timeout: a hang fails the test."""
    cmd = [sys.executable, "-m", "yrmpi", *args]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env or job_env(),
                              cwd=cwd or ROOT)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = (exc.stderr or b"").decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        pytest.fail(f"job hung for {timeout} s: {cmd}\n--- stdout\n{out[-3000:]}\n--- stderr\n{err[-3000:]}")


def check_names(script: Path) -> list[str]:
    """The checks a check script registers with @check, in order."""
    return re.findall(r"@check\ndef (\w+)\(", script.read_text())


def assert_check(proc: subprocess.CompletedProcess, results: dict[str, dict], name: str) -> None:
    """One check of a check-script run reported and passed (with the job's output if not)."""
    assert name in results, f"check {name} did not report\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert results[name]["ok"], results[name]["error"]


def parse_checks(proc: subprocess.CompletedProcess) -> dict[str, dict]:
    """The `CHECK {json}` lines a check script (tests/jobs/checklib.py) printed, by name."""
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("CHECK "):
            data = json.loads(line[len("CHECK "):])
            results[data["check"]] = data
    return results


@pytest.fixture
def run_job(tmp_path):
    """run_job(source, n=4) writes `source` to a script and runs it on n ranks with `yrmpi run`."""

    def run(source: str, n: int = 4, timeout: float = 120, args: tuple = (), **env: str):
        script = tmp_path / "job.py"
        script.write_text(textwrap.dedent(source))
        return run_yrmpi(["run", "-n", str(n), str(script), *args], timeout=timeout, env=job_env(**env))

    return run
