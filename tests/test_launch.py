"""Launch modes: python -m yrmpi under mpiexec, yrmpi run, self-launch, exit codes, errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT, job_env, run_yrmpi

pytestmark = pytest.mark.mpi

SEED = ROOT / "jobs" / "seed_tree.py"
REPORTS = ("Hyperparameter {'lr': 0.01} experiment completed, results: ['Loss: 10.0', 'Loss: 10.0']",
           "Hyperparameter {'lr': 0.001} experiment completed, results: ['Loss: 100.0', 'Loss: 100.0']")


def _check_seed_output(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]
    for report in REPORTS:
        assert report in proc.stdout, proc.stdout
    assert proc.stdout.count("is training data shard") == 4


def test_seed_example_under_mpiexec_directly():
    from yrmpi import launch

    cmd = launch.command(9, [sys.executable, "-m", "yrmpi", str(SEED)])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=job_env())
    _check_seed_output(proc)


def test_seed_example_with_yrmpi_run():
    _check_seed_output(run_yrmpi(["run", "-n", "9", str(SEED)]))


def test_seed_example_self_launched_with_default_ranks():
    _check_seed_output(run_yrmpi([str(SEED)]))


def test_tree_job_self_launches_from_plain_python():
    proc = subprocess.run([sys.executable, str(ROOT / "jobs" / "tree.py")], capture_output=True, text=True,
                          timeout=120, env=job_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "experiment completed" in proc.stdout


def test_script_arguments_and_exit_code_pass_through(run_job):
    proc = run_job("""
        import sys
        import yrmpi as yr
        yr.init()
        print("ARGS", sys.argv[1:])
        sys.exit(int(sys.argv[1]))
    """, n=3, args=("7", "--flag"))
    assert "ARGS ['7', '--flag']" in proc.stdout
    assert proc.returncode == 7


def test_driver_exception_ends_the_job_with_traceback_once(run_job):
    proc = run_job("""
        import yrmpi as yr

        @yr.instance
        class Worker:
            def ping(self):
                return 1

        yr.init()
        w = Worker.invoke()
        yr.get(w.ping.invoke())
        raise RuntimeError("driver-bug-42")
    """, n=3, timeout=60)
    assert proc.returncode != 0
    assert proc.stderr.count("RuntimeError: driver-bug-42") == 1, proc.stderr


def test_api_before_init_is_a_clear_error():
    code = ("import yrmpi as yr\n"
            "assert not yr.is_initialized()\n"
            "try:\n    yr.put(1)\nexcept yr.YRRuntimeError as e:\n    print('ERR', e)\n"
            "yr.finalize()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=job_env())
    assert "ERR system not initialized" in proc.stdout, proc.stderr


def test_prefix_can_be_turned_off(run_job):
    proc = run_job("""
        import yrmpi as yr

        @yr.invoke
        def hello():
            print("plain-line")

        yr.init()
        yr.get(hello.invoke())
    """, n=2, YRMPI_PREFIX_OUTPUT="0")
    assert proc.returncode == 0, proc.stderr
    assert "\nplain-line\n" in "\n" + proc.stdout


def test_one_rank_world_is_refused_with_advice():
    from yrmpi import launch

    proc = subprocess.run([launch.find_mpiexec(), "-n", "1", sys.executable, "-m", "yrmpi", str(SEED)],
                          capture_output=True, text=True, timeout=60, env=job_env())
    assert proc.returncode != 0
    assert "--mpi=pmix" in proc.stderr and "-n 2" in proc.stderr


def test_run_dry_run_shows_flags():
    proc = run_yrmpi(["run", "-n", "4", "--dry-run", str(SEED)])
    assert proc.returncode == 0
    assert "-n 4" in proc.stdout and "--oversubscribe" in proc.stdout and "--bind-to none" in proc.stdout
