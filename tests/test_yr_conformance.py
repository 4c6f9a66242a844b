"""yr programs written as openYuanrong's documentation shows them run unchanged under
`yrmpi run`: one launch runs every check in tests/jobs/yr_checks.py (`import yr`)."""

from __future__ import annotations

import pytest
from conftest import ROOT, assert_check, check_names, job_env, parse_checks, run_yrmpi

pytestmark = pytest.mark.mpi

CHECKS_SCRIPT = ROOT / "tests" / "jobs" / "yr_checks.py"
CHECK_NAMES = check_names(CHECKS_SCRIPT) + ["init_returns_client_info", "config_custom_envs", "init_finalize_init"]


@pytest.fixture(scope="module")
def yr_run():
    proc = run_yrmpi(["run", "-n", "5", str(CHECKS_SCRIPT)], timeout=240, env=job_env())
    return proc, parse_checks(proc)


@pytest.mark.parametrize("name", CHECK_NAMES)
def test_yr_check(yr_run, name):
    assert_check(*yr_run, name)


def test_yr_job_exits_cleanly(yr_run):
    proc, _ = yr_run
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_ignored_config_fields_are_named_in_one_warning(yr_run):
    proc, _ = yr_run
    lines = [line for line in proc.stderr.splitlines() if "server_address" in line]
    assert len(lines) == 1 and "ds_address" in lines[0] and "ignored" in lines[0], proc.stderr[-2000:]
