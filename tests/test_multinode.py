"""yrmpi across nodes (network namespaces on this machine, tests/multinode/testbed.py) and the
launch pieces behind it: host flags, forwarded variables, the driver's completion record,
hung-rank detection."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from conftest import ROOT, job_env, run_yrmpi

sys.path.insert(0, str(Path(__file__).resolve().parent / "multinode"))
from testbed import Testbed, TestbedUnavailable  # noqa: E402

JOBS = Path(__file__).resolve().parent / "multinode" / "jobs"
# A segfault inside Open MPI's ULFM agreement (MPI_Comm_shrink) across nodes under load: the MPI
# library's crash, not yrmpi's (docs/faults.md); seen once in about 7 full suite runs.
ULFM_AGREEMENT_CRASH = "mca_coll_ftagree"


# -- launch pieces (no MPI) ----------------------------------------------------------------------
@pytest.mark.parametrize("flags", [["--host", "a:2,b:2"], ["-host", "a,b"], ["--host=a,b"], ["-H", "a,b"],
                                   ["--hostfile", "f"], ["-hostfile", "f"], ["-machinefile", "f"],
                                   ["--machinefile", "f"], ["--default-hostfile", "f"], ["-default-hostfile", "f"],
                                   ["--prtemca", "prte_default_hostfile", "f"]])
def test_every_host_flag_spelling_is_multi_node(flags, monkeypatch):
    from yrmpi import launch

    for var in ("SLURM_JOB_NUM_NODES", "SLURM_NNODES", *launch.ALLOCATION_HOSTS, *launch.HOSTFILE_VARS):
        monkeypatch.delenv(var, raising=False)
    assert launch.single_node(["mpiexec", "-n", "4", sys.executable, "job.py"])
    assert not launch.single_node(["mpiexec", *flags, "-n", "4", sys.executable, "job.py"])
    # the script's own arguments are not the launcher's
    assert launch.single_node(["mpiexec", "-n", "4", sys.executable, "job.py", *flags])


def test_a_hostfile_in_the_environment_is_multi_node(monkeypatch):
    from yrmpi import launch

    monkeypatch.setenv("PRTE_MCA_prte_default_hostfile", "/etc/hosts.mpi")
    assert not launch.single_node(["mpiexec", "-n", "4", sys.executable, "job.py"])


def test_remote_ranks_get_the_jobs_variables():
    from yrmpi import launch

    env = {"PYTHONPATH": "/x", "YRMPI_FT": "1", "MALLOC_ARENA_MAX": "2", "HOME": "/root", "OMPI_X": "1"}
    assert launch.forward_flags(env) == ["-x", "MALLOC_ARENA_MAX", "-x", "PYTHONPATH", "-x", "YRMPI_FT"]


def test_run_dry_run_with_hosts_forwards_variables():
    proc = run_yrmpi(["run", "-n", "4", "--host", "a:2,b:2", "--dry-run", "jobs/seed_tree.py"])
    assert proc.returncode == 0, proc.stderr
    assert "--host a:2,b:2" in proc.stdout and "-x YRMPI_LAUNCHED" in proc.stdout
    assert f"{ROOT}/jobs/seed_tree.py" in proc.stdout  # absolute: remote ranks start elsewhere


# -- the driver's completion record (one node) ---------------------------------------------------
@pytest.mark.mpi
def test_a_job_whose_driver_dies_is_reported_lost(run_job):
    proc = run_job("""
        import os, signal
        import yrmpi as yr
        yr.init()
        os.kill(os.getpid(), signal.SIGKILL)
    """, n=2)
    assert proc.returncode == 69, proc.stderr[-2000:]
    assert "the job was lost before the driver finished" in proc.stderr


@pytest.mark.mpi
def test_the_drivers_code_is_the_jobs(run_job):
    proc = run_job("import sys\nimport yrmpi as yr\nyr.init()\nsys.exit(5)\n", n=2)
    assert proc.returncode == 5, proc.stderr[-2000:]
    assert "lost" not in proc.stderr


# -- hung ranks (one node) -----------------------------------------------------------------------
@pytest.mark.mpi
@pytest.mark.slow
def test_a_stopped_host_rank_is_declared_failed_and_the_job_ends():
    """SIGSTOP a rank holding a recoverable instance: declared failed after YRMPI_LIVENESS_S,
    the instance comes back on another rank, and the job ends although the rank never exits."""
    proc = subprocess.Popen([sys.executable, "-m", "yrmpi", "run", "-n", "3", str(JOBS / "hung_rank.py")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env=job_env(YRMPI_LIVENESS_S="3", YRMPI_EXIT_GRACE_S="3"))
    stopped = None
    try:
        out, err = proc.communicate(timeout=90)
        stopped = next((int(line.split()[1]) for line in out.splitlines() if line.startswith("PID")), None)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"hung\n{out}\n{err[-3000:]}")
    finally:
        if stopped is not None:
            try:
                os.kill(stopped, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert proc.returncode == 0, err[-3000:]
    recovered = next(line for line in out.splitlines() if line.startswith(("RECOVERED", "ERROR")))
    assert recovered.split()[:2] == ["RECOVERED", "True"], out + err[-2000:]
    assert float(recovered.split()[2]) < 20
    assert "AGAIN True" in out and "sent nothing for 3 s" in err


# -- across nodes (the testbed) ------------------------------------------------------------------
@pytest.fixture
def testbed(request):
    """N nodes (indirect parameter, default 2), always taken down, every process in them killed."""
    try:
        bed = Testbed(getattr(request, "param", 2))
    except TestbedUnavailable as exc:
        pytest.skip(f"no multi-node testbed here: {exc}")
    try:
        yield bed
    finally:
        bed.down()


@pytest.mark.multinode
@pytest.mark.slow
@pytest.mark.parametrize("testbed", [3], indirect=True)
def test_the_tree_across_three_nodes(testbed):
    """The issue's reproduction: 3 nodes x 4 ranks, 2 supervisors x 4 workers. Each group's workers
    on one node, the allreduce exact, the job's variables on every node, no private directories
    that exist on one node only."""
    rc, out = testbed.run(["yrmpi", "run", "-n", "12", "--host", testbed.hosts(4), str(JOBS / "tree_probe.py"), "4"],
                          env=testbed.env(YRMPI_PROBE_MARK="seen"), timeout=180)
    assert rc == 0, out[-4000:]
    probe = json.loads(next(line for line in out.splitlines() if line.startswith("PROBE"))[6:])
    assert probe["nodes"] == 3
    assert [len(set(g)) for g in probe["groups"]] == [1, 1], probe
    assert probe["groups"][0][0] != probe["groups"][1][0], probe
    assert probe["exact"], probe
    assert {m for _, m in probe["marks"]} == {"seen"} and len(probe["marks"]) == 2, probe
    assert "shmem: mmap" not in out


@pytest.mark.multinode
@pytest.mark.slow
def test_losing_a_node_ends_the_job_as_lost(testbed):
    """Every process of nodeb killed mid-job: PRRTE ends the whole job (and mpiexec may exit 0);
    yrmpi run says the job was lost, with EXIT_LOST, within seconds."""
    proc = testbed.popen(["yrmpi", "run", "-n", "8", "--host", testbed.hosts(4), str(JOBS / "lose_node.py"), "60"])
    lines = []
    try:
        deadline = time.monotonic() + 90
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("READY") or time.monotonic() > deadline:
                break
        assert any(line.startswith("READY") for line in lines), "".join(lines)[-3000:]
        t = time.monotonic()
        testbed.kill_node("nodeb")
        out, _ = proc.communicate(timeout=60)
        took = time.monotonic() - t
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    out = "".join(lines) + out
    assert proc.returncode == 69, out[-3000:]
    assert "the job was lost before the driver finished" in out
    assert took < 20, took


@pytest.mark.multinode
@pytest.mark.slow
def test_a_cut_link_is_detected_and_the_job_ends(testbed):
    """nodeb's link cut mid-job: MPI notices nothing for minutes; liveness declares its ranks
    failed after YRMPI_LIVENESS_S, the driver goes on and finishes, and the job ends."""
    env = testbed.env(YRMPI_LIVENESS_S="4", YRMPI_EXIT_GRACE_S="3")
    log = testbed.state / "cut.log"
    with log.open("w") as sink:  # (not a pipe: ranks orphaned on the cut node would hold it open)
        proc = testbed.popen(["yrmpi", "run", "-n", "8", "--host", testbed.hosts(4), str(JOBS / "lose_node.py"),
                              "25"], env=env, stdout=sink)
    try:
        deadline = time.monotonic() + 90
        while "READY" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "READY" in log.read_text(), log.read_text()[-3000:]
        testbed.cut("nodeb")
        proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        testbed.kill_jobs()
    out = log.read_text()
    assert "sent nothing for 4 s" in out, out[-3000:]
    assert proc.returncode == 0, out[-3000:]
    last = [line for line in out.splitlines() if line.startswith("ROUND")][-1]
    assert "nodeb" not in last, last


@pytest.mark.multinode
@pytest.mark.slow
def test_a_group_across_nodes_carves_again_after_a_member_rank_dies(testbed):
    """SIGKILL of a worker whose group spans two nodes; the next group across the nodes
    allreduces exactly (the carving communicator is shrunk after the death)."""
    cmd = ["yrmpi", "run", "-n", "6", "--host", testbed.hosts(3), str(JOBS / "group_after_death.py")]
    rc, out = testbed.run(cmd, timeout=240)
    if rc != 0 and ULFM_AGREEMENT_CRASH in out:  # Open MPI's own crash (docs/faults.md): once more
        warnings.warn(f"Open MPI's ULFM agreement crashed in the shrink; running the job again:\n{out[-1500:]}",
                      stacklevel=1)
        testbed.kill_jobs()
        rc, out = testbed.run(cmd, timeout=240)
    assert rc == 0, out[-4000:]
    probe = json.loads(next(line for line in out.splitlines() if line.startswith("PROBE"))[6:])
    assert len({host for host, _ in probe["before"]}) == 2, probe  # the group spans both nodes
    assert probe["died"] == "InstanceExitedError", probe
    assert len({host for host, _ in probe["after"]}) == 2 and all(ok for _, ok in probe["after"]), probe
