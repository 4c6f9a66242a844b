"""The yr API on real MPI ranks: one launch runs every check in tests/jobs/api_checks.py."""

from __future__ import annotations

import re

import pytest
from conftest import ROOT, assert_check, check_names, job_env, parse_checks, run_yrmpi

pytestmark = pytest.mark.mpi

CHECKS_SCRIPT = ROOT / "tests" / "jobs" / "api_checks.py"
CHECK_NAMES = check_names(CHECKS_SCRIPT)


@pytest.fixture(scope="module")
def api_run():
    proc = run_yrmpi(["run", "-n", "5", str(CHECKS_SCRIPT)], timeout=300, env=job_env())
    return proc, parse_checks(proc)


@pytest.mark.parametrize("name", CHECK_NAMES)
def test_api_check(api_run, name):
    assert_check(*api_run, name)


def test_api_job_exits_cleanly(api_run):
    proc, _ = api_run
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_instance_output_is_prefixed_with_class_and_rank(api_run):
    proc, _ = api_run
    assert re.search(r"^\(Counter pid=\d+, rank=\d+\) hello-from-instance$", proc.stdout, re.M), proc.stdout
