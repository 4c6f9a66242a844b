"""yrmpi under a real Slurm: generated and template batch scripts, signals, requeue, scancel.

The tests marked `slurm` start the single-node cluster of slurm/local-cluster.sh (installing
slurm-wlm, munge and libpmix-dev when missing) and stop it at the end if they started it.
Every wait is bounded; a job that does not get where it should fails with its log attached.
The unmarked tests check the generator's arithmetic and the templates without Slurm.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, job_env

from yrmpi import slurm
from yrmpi.sweep import load, read_journal

CLUSTER = ROOT / "slurm" / "local-cluster.sh"
TEMPLATES = {"sweep": ROOT / "slurm" / "sweep.sbatch", "job": ROOT / "slurm" / "job.sbatch"}

# Supervisor for the sweeps here: how long it works comes from init, not params, so `--set
# init.sleep=...` changes the pace without changing experiment ids.
ENTRY = '''
import time

import yr


@yr.instance
class Worker:
    def work(self, lr, seed, sleep):
        time.sleep(sleep)
        return (lr - 0.01) ** 2 + 0.001 * seed


class Sup:
    def __init__(self, sleep=0.2):
        self.sleep = sleep

    def run(self, params, trial):
        workers = [Worker.options(trial.worker_options).invoke() for _ in range(trial.workers)]
        losses = yr.get([w.work.invoke(params["lr"], trial.seed, self.sleep) for w in workers], timeout=300)
        return {"loss": sum(losses) / len(losses), "attempt": trial.attempt}
'''

SWEEP = {
    "name": "slurm-sweep",
    "entry": "sup.py:Sup",
    "run": "run",
    "init": {"sleep": 0.2},
    "workers": 2,
    "resources": {"supervisor": {"cpu": 100, "memory": 200}, "worker": {"cpu": 1000, "memory": 300}},
    "params": {"lr": [0.1, 0.01, 0.001]},
    "seeds": [0, 1],
    "metric": {"name": "loss", "mode": "min"},
    "max_concurrent": 3,
    "status_interval": 1,
    "grace_period": 1,
    "output": "results",
}


# ----------------------------------------------------------------------------------- helpers
def sh(cmd: list[str], timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    """Run a command with a hard timeout; a hang fails the test instead of the suite."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired:
        pytest.fail(f"timed out after {timeout} s: {' '.join(map(str, cmd))}")


def job_info(job: str) -> dict[str, str]:
    """`scontrol show job` as a dict (completed jobs stay visible for MinJobAge, 300 s)."""
    out = sh(["scontrol", "show", "job", "-o", job], timeout=20).stdout
    return dict(item.split("=", 1) for item in out.split() if "=" in item)


def in_queue(job: str) -> tuple[str, str] | None:
    """(state, reason) while the job is queued or running; None once it has left the queue."""
    out = sh(["squeue", "-h", "-j", job, "-o", "%T %r"], timeout=20).stdout.strip()
    if not out:
        return None
    state, _, reason = out.partition(" ")
    return state, reason


class Hurry:
    """Start a requeued job now instead of after the requeue hold (cred_expire + the scheduler pass).

    Only once the job has been PENDING (BeginTime) for 2 s: job credentials carry 1 s timestamps,
    and a run started in the second the previous one was revoked is killed by slurmd ("Job
    credential revoked"), which ends the job for good.
    """

    def __init__(self, job: str) -> None:
        self.job = job
        self.held_since: float | None = None
        self.done = False

    def __call__(self) -> tuple[str, str] | None:
        state = in_queue(self.job)
        if state != ("PENDING", "BeginTime"):
            self.held_since = None
            return state
        now = time.monotonic()
        self.held_since = self.held_since or now
        if not self.done and now - self.held_since >= 2:
            sh(["scontrol", "update", f"JobId={self.job}", "StartTime=now"])
            self.done = True
        return state


def diagnostics(job: str, log: Path | None) -> str:
    text = [f"scontrol: {job_info(job)}"]
    if log is not None and log.exists():
        text.append(f"--- {log.name} (last 4000 chars)\n{log.read_text(errors='replace')[-4000:]}")
    return "\n".join(text)


def wait_for(check: Callable[[], object], timeout: float, what: str, job: str, log: Path | None = None) -> object:
    """Poll `check` until it returns something truthy; fail with the job's state and log after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"job {job}: {what} did not happen within {timeout} s\n{diagnostics(job, log)}")
        time.sleep(0.5)


def wait_gone(job: str, timeout: float, log: Path | None = None) -> dict[str, str]:
    wait_for(lambda: in_queue(job) is None, timeout, "leaving the queue", job, log)
    return job_info(job)


def sweep_dir(tmp_path: Path, **changes) -> Path:
    (tmp_path / "sup.py").write_text(ENTRY)
    doc = {**SWEEP, **changes}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return tmp_path / "sweep.yaml"


def generate(tmp_path: Path, *args: str, submit: bool = True) -> tuple[str | None, Path]:
    """`yrmpi slurm sweep.yaml ARGS [--submit]` in tmp_path; (job id or None, script path)."""
    script = tmp_path / "sweep.sbatch"
    cmd = [sys.executable, "-m", "yrmpi", "slurm", "sweep.yaml", "--time", "10", "-o", str(script), *args]
    if submit:
        cmd.append("--submit")
    proc = sh(cmd, timeout=120, cwd=tmp_path, env=job_env())
    assert proc.returncode == 0, proc.stderr + proc.stdout
    job = proc.stdout.strip().splitlines()[-1] if submit else None
    if job is not None:
        assert job.isdigit(), proc.stdout
    return job, script


def finished_counts(out: Path) -> tuple[Counter, Counter, list[str]]:
    """(finished events per experiment, all events, reader warnings) from the sweep's journal."""
    records, warnings = read_journal(out)
    return (Counter(r["exp"] for r in records if r["event"] == "finished"),
            Counter(r["event"] for r in records), warnings)


# ----------------------------------------------------------------------------------- cluster
def _slurm_installed() -> bool:
    return all(shutil.which(p) for p in ("sbatch", "slurmctld", "slurmd", "munged"))


@pytest.fixture(scope="module")
def cluster():
    """The local single-node Slurm, started for this module (stopped at the end if we started it)."""
    if os.geteuid() != 0:
        pytest.skip("the local Slurm cluster runs as root (slurm/local-cluster.sh installs packages and daemons)")
    already_up = _slurm_installed() and sh([str(CLUSTER), "status"], timeout=60).returncode == 0
    if not already_up:
        proc = sh([str(CLUSTER), "start"], timeout=600)
        if proc.returncode != 0:
            if not _slurm_installed():
                pytest.skip("could not install slurm-wlm/munge/libpmix-dev with apt-get:\n"
                            + (proc.stdout + proc.stderr)[-2000:])
            pytest.fail(f"slurm/local-cluster.sh start failed:\n{proc.stdout}\n{proc.stderr}")
    yield
    if not already_up:
        proc = sh([str(CLUSTER), "stop"], timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr


# ------------------------------------------------------------------------------ Slurm tests
@pytest.mark.slurm
def test_generated_sweep_runs_to_the_end(cluster, tmp_path):
    """`yrmpi slurm --submit` sizes the job from the plan, submits it, and the sweep finishes
    (into a folder named after the job: --per-job-output)."""
    sweep_dir(tmp_path)
    job, script = generate(tmp_path, "--per-job-output")
    text = script.read_text()
    assert "#SBATCH --ntasks=8" in text  # 3 at once x (1 + 2 workers) on 7 host ranks + the driver
    assert "#SBATCH --signal=B:USR1@120" in text and "#SBATCH --requeue" in text
    log = tmp_path / f"yrmpi-slurm-sweep-{job}.out"
    info = wait_gone(job, 180, log)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", diagnostics(job, log)
    out = log.read_text()
    assert "--with-ft ulfm" in out and "ranks ended with exit code 0" in out
    results = tmp_path / "results" / f"job-{job}"
    summary = json.loads((results / "summary.json").read_text())
    assert summary["counts"]["finished"] == 6, summary["counts"]
    finished, _, warnings = finished_counts(results)
    assert sorted(finished.values()) == [1] * 6 and not warnings


@pytest.mark.slurm
@pytest.mark.parametrize("launcher", ["srun", "mpiexec"])
def test_seed_job_from_the_template(cluster, tmp_path, launcher):
    """slurm/job.sbatch runs the seed example with srun --mpi=pmix and with mpiexec in the allocation."""
    env = job_env(YRMPI_LAUNCHER=launcher, YRMPI_VENV=sys.prefix)
    proc = sh(["sbatch", "--parsable", "--ntasks=7", f"--output={tmp_path}/%j.out", str(TEMPLATES["job"]),
               str(ROOT / "jobs" / "seed_tree.py")], timeout=60, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    job = proc.stdout.strip().split(";")[0]
    log = tmp_path / f"{job}.out"
    info = wait_gone(job, 180, log)
    out = log.read_text()
    assert info["JobState"] == "COMPLETED", diagnostics(job, log)
    expected = "srun --mpi=pmix" if launcher == "srun" else "--with-ft ulfm"
    assert expected in out, out
    # Four workers on ranks 3..6 of one 7-rank world, and both experiments reported back.
    assert {int(r) for r in re.findall(r"TrainingWorker pid=\d+, rank=(\d+)", out)} == {3, 4, 5, 6}, out
    assert out.count("experiment completed") == 2 and "ranks ended with exit code 0" in out, out


KILL_A_RANK = '''
import os, signal
import yr


@yr.instance
class Victim:
    def die(self):
        os.kill(os.getpid(), signal.SIGKILL)


@yr.instance
class Fine:
    def ping(self):
        return "pong"


yr.init()
try:
    yr.get(Victim.invoke().die.invoke(), timeout=60)
except Exception as exc:
    print("victim call failed:", type(exc).__name__, flush=True)
print("survived:", yr.get(Fine.invoke().ping.invoke(), timeout=60), flush=True)
'''


@pytest.mark.slurm
@pytest.mark.parametrize("launcher", ["mpiexec", "srun"])
def test_rank_death_ulfm_with_mpiexec_not_with_srun(cluster, tmp_path, launcher):
    """A SIGKILLed host rank: with mpiexec inside the allocation (ULFM) the job goes on; under srun
    direct launch Slurm's PMIx plugin ends the whole step (the documented caveat), and the job is
    reported lost unless its driver had already finished."""
    (tmp_path / "kill_rank.py").write_text(KILL_A_RANK)
    proc = sh(["sbatch", "--parsable", "--ntasks=4", f"--output={tmp_path}/%j.out", str(TEMPLATES["job"]),
               "kill_rank.py"], cwd=tmp_path, env=job_env(YRMPI_LAUNCHER=launcher, YRMPI_VENV=sys.prefix))
    assert proc.returncode == 0, proc.stderr
    job = proc.stdout.strip().split(";")[0]
    log = tmp_path / f"{job}.out"
    info = wait_gone(job, 120, log)
    out = log.read_text()
    if launcher == "mpiexec":
        assert info["JobState"] == "COMPLETED", diagnostics(job, log)
        assert "victim call failed: InstanceExitedError" in out and "survived: pong" in out, out
    else:
        # No ULFM under srun: Slurm's PMIx plugin ends the step when the task dies. If it does so
        # before the driver finishes, the driver recorded no result: the job was lost (69, FAILED).
        # If the driver finished first (the dead rank was failed by yrmpi's liveness check), its own
        # code is the job's. Either way the outcome tells the truth, never a success with work lost.
        assert "fault tolerance is off" in out, diagnostics(job, log)
        if "the job was lost before the driver finished" in out:
            assert info["JobState"] == "FAILED" and "survived" not in out, diagnostics(job, log)
        else:
            assert info["JobState"] == "COMPLETED" and "victim call failed" in out, diagnostics(job, log)


PLAIN_JOB = '''
import os, signal, sys, threading, time
import yr

restart = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
stop = threading.Event()
if restart == 0:  # the first run checkpoints on the warning; the rerun ignores it (no handler)
    signal.signal(signal.SIGUSR1, lambda *_: stop.set())


@yr.instance
class Counter:
    def __init__(self):
        self.n = 0

    def step(self):
        self.n += 1
        time.sleep(0.2)
        return self.n


yr.init()
counter = Counter.invoke()
print(f"start restart={restart}", flush=True)
steps = 0
while steps < (1000 if restart == 0 else 40):
    steps = yr.get(counter.step.invoke())
    if stop.is_set():
        print(f"checkpoint at step {steps}; exit 75", flush=True)
        sys.exit(75)
print(f"done restart={restart} steps={steps}", flush=True)
'''


@pytest.mark.slurm
def test_plain_job_warning_checkpoint_requeue_and_default_handler(cluster, tmp_path):
    """job.sbatch: a job script that handles SIGUSR1 and exits 75 is requeued; without a handler the
    warning is only logged and the job runs to its end (host ranks are unharmed either way)."""
    (tmp_path / "job.py").write_text(PLAIN_JOB)
    proc = sh(["sbatch", "--parsable", "--ntasks=3", f"--output={tmp_path}/%j.out", str(TEMPLATES["job"]), "job.py"],
              cwd=tmp_path, env=job_env(YRMPI_VENV=sys.prefix))
    assert proc.returncode == 0, proc.stderr
    job = proc.stdout.strip().split(";")[0]
    log = tmp_path / f"{job}.out"
    wait_for(lambda: log.exists() and "start restart=0" in log.read_text(), 120, "the first run starting", job, log)
    assert sh(["scancel", "--signal=USR1", "--batch", job]).returncode == 0

    hurry = Hurry(job)

    def rerun_started() -> bool:
        hurry()
        return "start restart=1" in log.read_text()

    wait_for(rerun_started, 120, "the requeued run starting", job, log)
    assert sh(["scancel", "--signal=USR1", "--batch", job]).returncode == 0
    info = wait_gone(job, 120, log)
    out = log.read_text()
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", diagnostics(job, log)
    assert "exit 75" in out and "exit code 75 (interrupted): requeueing" in out, out
    assert "installs no handler for it, so it runs on until the limit" in out, out
    assert "done restart=1 steps=40" in out and "ranks ended with exit code 0" in out, out


@pytest.mark.slurm
def test_usr1_interrupts_requeues_and_resumes_exactly_once(cluster, tmp_path):
    """scancel --signal=USR1 --full mid-run: exit 75, the script requeues, the rerun finishes the rest once."""
    sweep_dir(tmp_path)
    job, _ = generate(tmp_path, "--set", "init.sleep=4")
    log = tmp_path / f"yrmpi-slurm-sweep-{job}.out"
    journal = tmp_path / "results" / "journal.jsonl"
    wait_for(lambda: journal.exists() and '"started"' in journal.read_text(), 120, "a started experiment", job, log)
    assert sh(["scancel", "--signal=USR1", "--full", job]).returncode == 0

    hurry = Hurry(job)

    def requeued_and_hurried() -> bool:
        """True once the requeued run started (moving the requeue hold to now on the way)."""
        state = hurry()
        return job_info(job).get("Restarts") == "1" and state is not None and state[0] == "RUNNING"

    wait_for(requeued_and_hurried, 120, "the requeued run starting", job, log)
    info = wait_gone(job, 180, log)
    out = log.read_text()
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", diagnostics(job, log)
    assert "SIGUSR1: starting no more experiments" in out, out
    assert "exit code 75 (interrupted): requeueing" in out and "(SLURM_RESTART_COUNT=1)" in out, out
    assert "ranks ended with exit code 0" in out, out
    finished, events, warnings = finished_counts(tmp_path / "results")
    assert sorted(finished.values()) == [1] * 6 and not warnings, (finished, warnings)
    assert events["interrupted"] >= 1, events  # the run was stopped with experiments running...
    # ...and only those (plus the never started ones) ran again: one start per interruption + 1.
    records, _ = read_journal(tmp_path / "results")
    for exp in finished:
        kinds = Counter(r["event"] for r in records if r["exp"] == exp)
        assert kinds["started"] == kinds["interrupted"] + 1, (exp, kinds)


@pytest.mark.slurm
def test_time_limit_warning_reaches_rank_0_and_requeues(cluster, tmp_path):
    """Slurm's own B:USR1 warning stops the sweep and requeues it. A 3-minute job warned 110 s
    ahead: Slurm checks once a minute and may warn up to 60 s early, so the warning comes 10-70 s
    after the start (late enough for the ranks to have their handlers, early enough for a test).
    The sweep (6 experiments of 45 s, 3 at a time: 90 s) outlasts the latest warning; with 30 s
    experiments a warning at 60 s once came just as the last ones finished, and nothing was left
    to requeue."""
    sweep_dir(tmp_path)
    _, script = generate(tmp_path, "--set", "init.sleep=45", submit=False)
    proc = sh(["sbatch", "--parsable", "--time=3", "--signal=B:USR1@110", str(script)], cwd=tmp_path, env=job_env())
    assert proc.returncode == 0, proc.stderr
    job = proc.stdout.strip().split(";")[0]
    log = tmp_path / f"yrmpi-slurm-sweep-{job}.out"
    try:
        wait_for(lambda: job_info(job).get("Restarts") == "1", 180, "a requeue after the warning", job, log)
        out = log.read_text()
        assert "SIGUSR1 (time limit near" in out and "SIGUSR1: starting no more experiments" in out, out
        assert "exit code 75 (interrupted): requeueing" in out, out
    finally:
        sh(["scancel", job])
        wait_gone(job, 90, log)


@pytest.mark.slurm
def test_scancel_mid_run_ends_every_rank_and_leaves_a_readable_journal(cluster, tmp_path):
    """A plain scancel ends the job (no requeue), every rank goes, the journal reads cleanly and resumes."""
    sweep_dir(tmp_path)
    job, script = generate(tmp_path, "--set", "init.sleep=30")
    log = tmp_path / f"yrmpi-slurm-sweep-{job}.out"
    journal = tmp_path / "results" / "journal.jsonl"
    wait_for(lambda: journal.exists() and journal.read_text().count('"started"') >= 3, 120,
             "three started experiments", job, log)
    assert sh(["scancel", job]).returncode == 0
    info = wait_gone(job, 90, log)
    assert info["JobState"] == "CANCELLED" and info.get("Restarts") == "0", diagnostics(job, log)
    left = sh(["pgrep", "-f", str(tmp_path / "sweep.yaml")]).stdout.split()
    assert not left, f"processes of the cancelled job still run: {left}"
    finished, events, warnings = finished_counts(tmp_path / "results")
    assert not finished and events["started"] >= 3 and len(warnings) <= 1, (events, warnings)
    # The journal is good enough to resume from: a dry run (of the same sweep: the same --set) sees
    # all 6 still to run.
    config = load(tmp_path / "sweep.yaml", check_entry=False)
    dry = sh([sys.executable, "-m", "yrmpi", "sweep", "sweep.yaml", "--set", "init.sleep=30", "--dry-run"],
             timeout=120, cwd=tmp_path, env=job_env())
    assert dry.returncode == 0 and "6 experiments" in dry.stdout, dry.stdout + dry.stderr
    assert Path(config.output).name == "results"
    report = sh([sys.executable, "-m", "yrmpi", "report", "results"], timeout=60, cwd=tmp_path, env=job_env())
    assert report.returncode == 0 and "running" in report.stdout, report.stdout + report.stderr


# ------------------------------------------------------------------------ no-Slurm unit tests
def test_templates_contain_the_generator_blocks():
    """The checked-in templates and generated scripts share the capacity and run/requeue bash."""
    for name, path in TEMPLATES.items():
        text = path.read_text()
        for block in (slurm.CAPACITY_BLOCK, slurm.DETECT_BLOCK, slurm.RUN_BLOCK):
            assert block in text, f"{path} is out of date with yrmpi/slurm/templates.py ({name})"
        for line in ("#SBATCH --signal=B:USR1@120", "#SBATCH --requeue", "#SBATCH --open-mode=append",
                     "#SBATCH --output=%x-%j.out"):
            assert line in text, (path, line)
        assert sh(["bash", "-n", str(path)]).returncode == 0


@pytest.mark.parametrize("level", ["0", "1", "heartbeat"])
def test_template_mpiexec_flags_match_yrmpi_run(level):
    """The template's Open MPI line uses the same flags as `yrmpi run` for every YRMPI_FT level."""
    from yrmpi import launch

    mpiexec = launch.find_mpiexec()
    if launch.flavor(mpiexec) != "openmpi":
        pytest.skip("Open MPI's flags only")
    flags = " ".join(launch.mpiexec_flags(mpiexec, level))
    start = slurm.DETECT_BLOCK.index("mpiexec/openmpi)")
    block = slurm.DETECT_BLOCK[start:slurm.DETECT_BLOCK.index(";;\n", slurm.DETECT_BLOCK.index("esac", start))]
    words = re.search(r'launch=\("\$mpiexec" -n "\$SLURM_NTASKS" ([^)]*)\)', block).group(1)
    case = {"0": "0) ;;", "1": "*) launch+=(", "heartbeat": "heartbeat) launch+=("}[level]
    extra = block.split(case, 1)[1].split(")", 1)[0] if level != "0" else ""
    assert flags == " ".join(filter(None, [words, extra.strip()])), (flags, words, extra)


@pytest.mark.parametrize("text, seconds", [("30", 1800), ("5:00", 300), ("2:00:00", 7200), ("1-0", 86400),
                                           ("1-2:03", 93780), ("0-00:10:05", 605)])
def test_parse_time(text, seconds):
    assert slurm.parse_time(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "1:2:3:4", "0", "-5"])
def test_parse_time_rejects(text):
    with pytest.raises(slurm.SlurmError, match="--time"):
        slurm.parse_time(text)


def _config(tmp_path: Path, **changes):
    return load(sweep_dir(tmp_path, **changes), check_entry=False)


def test_sizing_counts_host_ranks_for_the_wanted_concurrency_plus_the_driver(tmp_path):
    cfg = _config(tmp_path)
    s = slurm.size_sweep(cfg, 6, 6)
    # 3 at once: 3 supervisors (100 each) share a rank with room to spare, 6 workers take 6 ranks.
    assert (s.ntasks, s.concurrency, s.mem_per_cpu) == (8, 3, 600)
    assert any("+ 1 driver = 8 ranks" in line for line in s.lines)
    # No max_concurrent: everything left at once.
    s = slurm.size_sweep(_config(tmp_path, max_concurrent=None), 6, 6)
    assert (s.ntasks, s.concurrency) == (14, 6)
    # Two CPUs per rank hold a worker and the supervisors next to it: fewer, bigger ranks.
    s = slurm.size_sweep(cfg, 6, 6, cpus_per_task=2)
    assert s.concurrency == 3 and s.ntasks < 8


def test_sizing_with_nodes_and_tasks_per_node(tmp_path):
    cfg = _config(tmp_path)
    s = slurm.size_sweep(cfg, 6, 6, nodes=2, tasks_per_node=2)  # given: 4 ranks, 3 host ranks
    assert (s.ntasks, s.nodes, s.concurrency) == (4, 2, 1)
    s = slurm.size_sweep(cfg, 6, 6, tasks_per_node=3)  # 8 needed -> 3 nodes x 3
    assert (s.ntasks, s.nodes, s.tasks_per_node) == (9, 3, 3)
    with pytest.raises(slurm.SlurmError, match="at least one host rank"):
        slurm.size_sweep(cfg, 6, 6, nodes=1, tasks_per_node=1)


def test_sizing_explains_what_does_not_fit(tmp_path):
    cfg = _config(tmp_path, resources={"supervisor": {"cpu": 100, "memory": 200},
                                       "worker": {"cpu": 3000, "memory": 300}})
    with pytest.raises(slurm.SlurmError, match="worker.*try --cpus-per-task 3"):
        slurm.size_sweep(cfg, 6, 6)  # a 3-core worker on 1-CPU ranks
    assert slurm.size_sweep(cfg, 6, 6, cpus_per_task=3).concurrency == 3


def test_memory_limits_the_plan_when_given(tmp_path):
    cfg = _config(tmp_path)
    # 300 MB ranks hold one worker or one supervisor, never two instances: 3 + 6 host ranks + the driver.
    s = slurm.size_sweep(cfg, 6, 6, mem_per_cpu=300)
    assert s.mem_per_cpu == 300 and s.concurrency == 3 and s.ntasks == 10


def test_generated_script_is_complete_and_valid_bash(tmp_path):
    sweep_dir(tmp_path)
    proc = sh([sys.executable, "-m", "yrmpi", "slurm", "sweep.yaml", "--partition", "debug", "--account", "lab",
               "--time", "1-00:00:00", "--set", "init.sleep=1", "--per-job-output", "-o", "-"],
              timeout=120, cwd=tmp_path, env=job_env())
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    for line in ("#SBATCH --ntasks=8", "#SBATCH --partition=debug", "#SBATCH --account=lab",
                 "#SBATCH --time=1-00:00:00", f"#SBATCH --chdir={tmp_path}", "#SBATCH --signal=B:USR1@120",
                 "#SBATCH --mem-per-cpu=600", "#SBATCH --requeue", "#SBATCH --open-mode=append"):
        assert line in text, line
    assert slurm.CAPACITY_BLOCK in text and slurm.RUN_BLOCK in text
    assert "--set init.sleep=1" in text and f'"{tmp_path}/results/job-${{SLURM_JOB_ID}}"' in text
    script = tmp_path / "x.sbatch"
    script.write_text(text)
    assert sh(["bash", "-n", str(script)]).returncode == 0


def test_plain_job_entry_runs_as_a_module_and_explains_its_usage():
    """slurm/job.sbatch runs `python -m yrmpi.slurm job.py`: the package must be runnable."""
    proc = sh([sys.executable, "-m", "yrmpi.slurm"], timeout=60, env=job_env())
    assert proc.returncode == 2 and "usage: python -m yrmpi.slurm job.py" in proc.stderr, proc.stderr


def test_generator_refuses_a_time_limit_shorter_than_the_warning(tmp_path):
    sweep_dir(tmp_path)
    proc = sh([sys.executable, "-m", "yrmpi", "slurm", "sweep.yaml", "--time", "3", "-o", "-"], timeout=120,
              cwd=tmp_path, env=job_env())
    assert proc.returncode == 2 and "ask for at least 240 s" in proc.stderr, proc.stderr
