"""Launch modes: python -m yrmpi under mpiexec, yrmpi run, self-launch, exit codes, errors."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

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


# -- state a killed Open MPI job leaves behind ------------------------------------------------
def _openmpi() -> bool:
    from yrmpi import launch

    return launch.flavor(launch.find_mpiexec()) == "openmpi"


openmpi_only = pytest.mark.skipif(not _openmpi(), reason="Open MPI only")
PID_CONTROL = "/proc/sys/kernel/ns_last_pid"
REPORT_PID = ("from mpi4py import MPI; import os, time; MPI.COMM_WORLD.Barrier(); "
              "print('MPIEXEC', os.getppid(), flush=True)")
AT_PID = """
import subprocess, sys
from yrmpi import launch
how, pid, cmd = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
launch.flavor(cmd[0])  # (cached: no other process starts between setting the pid and the launch)
env = launch.launch_env()
with open("/proc/sys/kernel/ns_last_pid", "w") as f:
    f.write(str(pid - 1))
sys.exit(subprocess.run(cmd, env=env).returncode if how == "plain" else launch.run(cmd))
"""


def _at_pid(how: str, pid: int, code: str) -> subprocess.Popen:
    """An Open MPI job of 2 ranks running `code`, whose mpiexec gets `pid`: started by plain
    mpiexec or by yrmpi's launch.run."""
    from yrmpi import launch

    cmd = launch.command(2, [sys.executable, "-c", code])
    return subprocess.Popen([sys.executable, "-c", AT_PID, how, str(pid), *cmd], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=job_env())


def _kill_job_at(pid: int) -> None:
    """Start a job whose mpiexec gets `pid`, then SIGKILL mpiexec and its ranks mid-job."""
    proc = _at_pid("plain", pid, REPORT_PID + "; time.sleep(120)")
    line = proc.stdout.readline()
    if line.split() != ["MPIEXEC", str(pid)]:
        proc.kill()
        pytest.skip(f"another process took pid {pid} first ({line.strip()!r})")
    ranks = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    for victim in [pid, *map(int, ranks)]:
        os.kill(victim, signal.SIGKILL)
    proc.wait(timeout=30)


@openmpi_only
@pytest.mark.skipif(not os.access(PID_CONTROL, os.W_OK), reason="choosing the next pid needs root")
def test_a_killed_jobs_leftovers_do_not_break_a_launch_that_gets_its_pid():
    """Open MPI keys its session directory and shared-memory files on mpiexec's pid; a job
    killed with SIGKILL leaves them behind, and pids wrap. Plain mpiexec given that pid again
    fails to start; yrmpi's launch gives every job directories of its own, so it runs."""
    with open(PID_CONTROL) as f:
        pid = next(p for p in range(int(f.read()) + 300, 1 << 22) if not os.path.exists(f"/proc/{p}"))
    shm_before = set(os.listdir("/dev/shm"))
    try:
        _kill_job_at(pid)
        plain = _at_pid("plain", pid, REPORT_PID)
        out, _ = plain.communicate(timeout=120)
        assert plain.returncode != 0 and "listener thread failed to start" in out, out[-2000:]

        _kill_job_at(pid)  # (the failed launch removed the leftovers: leave them again)
        ours = _at_pid("yrmpi", pid, REPORT_PID)
        out, _ = ours.communicate(timeout=120)
        assert ours.returncode == 0 and f"MPIEXEC {pid}" in out, out[-2000:]
    finally:
        shutil.rmtree(f"/tmp/ompi.{pid}", ignore_errors=True)
        for name in set(os.listdir("/dev/shm")) - shm_before:
            if name.startswith("sm_segment."):
                os.unlink(f"/dev/shm/{name}")


@openmpi_only
def test_each_openmpi_launch_keeps_its_state_in_its_own_directories(run_job, tmp_path):
    """Session directory and shared-memory files in private directories, removed after the job;
    ones left by a launcher that was killed are removed by the next launch."""
    from yrmpi import launch

    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = Path(tempfile.gettempdir()) / f"{launch.PRIVATE_PREFIX}{dead.pid}-test"
    orphan.mkdir()
    proc = run_job("""
        import os
        import yrmpi as yr
        yr.init()
        session = os.path.dirname(os.environ["PMIX_SERVER_TMPDIR"])  # the job's session directory is inside
        shm = os.environ["OMPI_MCA_btl_sm_backing_directory"]
        print("DIRS", session, shm, " ".join(os.listdir(shm)))
    """, n=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    session, shm, *segments = next(line for line in proc.stdout.splitlines() if line.startswith("DIRS")).split()[1:]
    assert f"/{launch.PRIVATE_PREFIX}" in session and f"/{launch.PRIVATE_PREFIX}" in shm, (session, shm)
    assert len(segments) == 2 and all(name.startswith("sm_segment.") for name in segments), segments
    assert not os.path.exists(session) and not os.path.exists(shm), "removed after the job"
    assert not orphan.exists(), "a killed launcher's directory is removed by the next launch"


def test_private_directories_only_for_launches_that_stay_on_this_node(monkeypatch):
    """The directories exist on this node only: a launch that may reach other nodes (host
    flags, a multi-node Slurm allocation, a PBS/LSF host list) keeps Open MPI's defaults."""
    from yrmpi import launch

    for var in ("SLURM_JOB_NUM_NODES", "SLURM_NNODES", *launch.ALLOCATION_HOSTS):
        monkeypatch.delenv(var, raising=False)
    assert launch.single_node(["mpiexec", "-n", "4", "python", "job.py"])
    assert not launch.single_node(["mpiexec", "--hostfile", "hosts", "-n", "4", "python", "job.py"])
    assert not launch.single_node(["mpiexec", "--host=a,b", "-n", "4", "python", "job.py"])
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "1")
    assert launch.single_node(["mpiexec", "-n", "4", "python", "job.py"])
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "3")
    assert not launch.single_node(["mpiexec", "-n", "4", "python", "job.py"])
    monkeypatch.delenv("SLURM_JOB_NUM_NODES")
    monkeypatch.setenv("PBS_NODEFILE", "/var/spool/pbs/aux/1")
    assert not launch.single_node(["mpiexec", "-n", "4", "python", "job.py"])


def test_heartbeat_is_not_used_across_nodes_and_says_so(caplog):
    from yrmpi import launch

    mpiexec = launch.find_mpiexec()
    with caplog.at_level("WARNING", logger="yrmpi"):
        across = launch.command(4, ["job.py"], mpiexec=mpiexec, extra=launch.host_flags("a:2,b:2", None),
                                fault_tolerance="heartbeat")
    assert "mpi_ft_detector" not in across and "--with-ft" in across and "--host" in across
    assert "YRMPI_FT=heartbeat is not used across nodes" in caplog.text
    one_node = launch.command(4, ["job.py"], mpiexec=mpiexec, fault_tolerance="heartbeat")
    assert "mpi_ft_detector" in one_node


def test_sweep_takes_the_same_host_options_as_run():
    from yrmpi import launch
    from yrmpi.sweep.cli import _sweep_parser

    ns = _sweep_parser().parse_args(["s.yaml", "--host", "a:3,b:2", "--hostfile", "hosts"])
    assert launch.host_flags(ns.host, ns.hostfile) == ["--host", "a:3,b:2", "--hostfile", "hosts"]
