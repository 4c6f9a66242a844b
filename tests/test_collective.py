"""Communicator subgroups on real ranks: results, co-location, concurrency, membership changes,
interruption, mismatches (the checks in tests/jobs/collective_checks.py, one launch per
configuration), and the data-parallel job against single-process training.
"""

from __future__ import annotations

import pytest
from conftest import ROOT, assert_check, check_names, job_env, parse_checks, run_yrmpi

pytestmark = [pytest.mark.mpi]

CHECKS_SCRIPT = ROOT / "tests" / "jobs" / "collective_checks.py"
CHECK_NAMES = check_names(CHECKS_SCRIPT)


@pytest.fixture(scope="module", params=["ulfm", "no-ulfm"])
def collective_run(request, tmp_path_factory):
    """One job on 4 ranks (3 hosts) runs every check in order; with Open MPI's ULFM (the
    launcher's default) and without it: interruption must not depend on it."""
    tmp = tmp_path_factory.mktemp("collective")
    ft = "1" if request.param == "ulfm" else "0"
    proc = run_yrmpi(["run", "-n", "4", str(CHECKS_SCRIPT)], timeout=240, env=job_env(COLL_TMP=str(tmp), YRMPI_FT=ft))
    return proc, parse_checks(proc)


@pytest.mark.parametrize("name", CHECK_NAMES)
def test_collective_check(collective_run, name):
    assert_check(*collective_run, name)


def test_checks_ran_in_one_clean_job(collective_run):
    proc, results = collective_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(results) == CHECK_NAMES, list(results)


def test_data_parallel_matches_single_process_training():
    """Weights after K steps, data-parallel over allreduce and via a parameter server, equal
    single-process full-batch training to 1e-6 relative (one member per rank, and shared ranks)."""
    proc = run_yrmpi(["run", "-n", "5", str(ROOT / "jobs" / "data_parallel.py"), "--verify", "25"], timeout=240)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("verify ")]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert len(lines) == 4 and all(line.endswith("OK") for line in lines), proc.stdout
