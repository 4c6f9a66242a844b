"""One test per defect of the sweep hardening issue (items 2, 3, 4, 5, 7, 8, 10), in-process, no MPI.

Every `yrmpi sweep` here that must fail does so before MPI would start: `launch.run` is
replaced by a function that fails the test, so nothing is ever launched.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import stat
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from yrmpi import launch, sweep
from yrmpi.cli import main
from yrmpi.core.options import InvokeOptions
from yrmpi.sweep import cli as sweep_cli
from yrmpi.sweep import output as output_mod
from yrmpi.sweep import runner as runner_mod
from yrmpi.sweep.config import Grid, Resources, SweepConfig, SweepConfigError, load
from yrmpi.sweep.journal import Journal, check_fingerprint, json_safe, read_journal
from yrmpi.sweep.output import LOCK_ENV, SweepLock, check_output
from yrmpi.sweep.runner import SweepOptions, SweepRunner, size_launch

ENTRY = ("class Sup:\n    def __init__(self, scale=1):\n        self.scale = scale\n\n"
         "    def run(self, params, trial):\n        return {'loss': params['lr'] * self.scale}\n")


@pytest.fixture(autouse=True)
def no_mpi(monkeypatch) -> None:
    """Nothing here may launch MPI; rank capacity must not depend on this machine."""
    def refuse(*_a, **_k):
        raise AssertionError("MPI would have been launched")

    monkeypatch.setattr(launch, "run", refuse)
    monkeypatch.setenv("YRMPI_MEMORY_PER_RANK", "4000")
    for name in ("YRMPI_CPU_PER_RANK", "YRMPI_RESOURCES", "SLURM_RESTART_COUNT", LOCK_ENV):
        monkeypatch.delenv(name, raising=False)


def write_sweep(tmp_path: Path, body: str = "", out: str | None = None) -> Path:
    (tmp_path / "entry.py").write_text(ENTRY)
    path = tmp_path / "s.yaml"
    output = out if out is not None else str(tmp_path / "out")
    path.write_text(f"name: s\nentry: entry.py:Sup\nrun: run\nparams: {{lr: [0.1, 0.2]}}\n"
                    f"output: {json.dumps(output)}\n{body}")
    return path


def sweep_cmd(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["sweep", *argv])
    return code, out.getvalue(), err.getvalue()


def assert_one_line_exit_2(code: int, err: str, *, match: str = "") -> None:
    lines = err.strip().splitlines()
    assert code == sweep.EXIT_CONFIG == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.search(match, lines[0]), lines[0]


# -- 2. a poison result ---------------------------------------------------------------------------
class _Creator:
    invoke_options = InvokeOptions()

    def options(self, _opts):
        return self


def _runner(tmp_path: Path, warnings: list[str]) -> SweepRunner:
    cfg = SweepConfig(name="s", entry="x.py:C", run="run", params={"lr": Grid((0.1,))},
                      output=str(tmp_path))
    experiments = sweep.expand(cfg)
    plan = sweep.plan_capacity(cfg, runner_mod.local_ranks(2), 1)
    return SweepRunner(cfg, experiments, experiments, plan, Journal(tmp_path), [], runner_mod.StopRequest(),
                       creator=_Creator(), log=lambda _m: None, warn=warnings.append)


def test_a_result_json_cannot_encode_is_stored_safely_with_a_warning_naming_the_key(tmp_path: Path) -> None:
    looped: dict = {"a": 1}
    looped["self"] = looped
    result = {"loss": 0.5, "file": os.fsdecode(b"run-\xff.log"), "loop": looped}
    warnings: list[str] = []
    runner = _runner(tmp_path, warnings)
    metrics = runner._recordable(runner.experiments[0], result)
    runner.journal.finished(runner.experiments[0].id, metrics, wall=1.0)
    records, read_warnings = read_journal(tmp_path)
    assert not read_warnings and records[-1]["metrics"]["loss"] == 0.5
    assert records[-1]["metrics"]["file"] == "run-\\udcff.log"
    assert records[-1]["metrics"]["loop"]["self"] == "<cycle>"
    assert any("metrics.file" in w for w in warnings) and any("metrics.loop.self" in w for w in warnings)


def test_the_journal_itself_never_raises_on_an_unencodable_value(tmp_path: Path) -> None:
    looped: list = []
    looped.append(looped)
    j = Journal(tmp_path)
    j.finished("e1", {"name": "\udc80", "loop": looped, "big": 10 ** 5000}, wall=1.0)
    j.failed("e1", "OSError: " + os.fsdecode(b"\xfe"), "tb")
    records, warnings = read_journal(tmp_path)
    assert not warnings and [r["event"] for r in records] == ["finished", "failed"]
    assert json_safe({"k": "\ud800"})[1] == ["value.k: text with a lone surrogate (not UTF-8), stored escaped"]


# -- 3. a changed config ---------------------------------------------------------------------------
def test_a_resume_with_a_changed_config_is_refused_naming_what_changed(tmp_path: Path) -> None:
    path = write_sweep(tmp_path)
    cfg = load(path)
    out = Path(cfg.output)
    Journal(out).sweep(cfg.to_dict())
    Journal(out).finished("e1", {"loss": 1.0}, wall=1.0)
    sweep.write_resolved_config(out, cfg.to_dict())
    before = (out / "config.yaml").read_text()
    check_fingerprint(out, cfg.to_dict())  # the same sweep: fine
    for change, named in (("workers=2", r"workers 0 -> 2"), ("init.scale=3", r"init \(scale\)"),
                          ("resources.worker.cpu=200", r"resources \(worker\)"),
                          ("params.lr=[0.1,0.3]", r"params \(lr\)"), ("name=t", r'name "s" -> "t"')):
        code, _, err = sweep_cmd(str(path), "--set", change)
        assert_one_line_exit_2(code, err, match=named + r".*--fresh.*-o DIR")
        code, _, err = sweep_cmd(str(path), "--set", change, "--dry-run")
        assert_one_line_exit_2(code, err, match=named)
    assert (out / "config.yaml").read_text() == before  # never silently replaced


def test_a_journal_from_before_fingerprints_is_checked_against_its_config_yaml(tmp_path: Path) -> None:
    path = write_sweep(tmp_path)
    cfg = load(path)
    out = Path(cfg.output)
    Journal(out).finished("e1", {"loss": 1.0}, wall=1.0)
    sweep.write_resolved_config(out, cfg.to_dict())
    code, _, err = sweep_cmd(str(path), "--set", "entry=entry.py:Sup", "--set", "workers=1")
    assert_one_line_exit_2(code, err, match="workers 0 -> 1")


# -- 4. two sweeps on one folder -------------------------------------------------------------------
def test_a_second_sweep_on_a_running_folder_fails_at_once_naming_the_first(tmp_path: Path) -> None:
    path = write_sweep(tmp_path)
    out = tmp_path / "out"
    sweep.Journal(out).started("e1", attempt=1)
    with SweepLock(out):
        code, _, err = sweep_cmd(str(path))
        assert_one_line_exit_2(code, err, match=rf"another sweep running on this folder \(pid {os.getpid()} ")
        code, _, err = sweep_cmd(str(path), "--fresh")  # --fresh takes the lock before moving anything
        assert_one_line_exit_2(code, err, match="another sweep running")
    assert not list(out.glob("previous-*")) and (out / "journal.jsonl").exists()


def test_a_killed_holder_leaves_no_stuck_lock(tmp_path: Path) -> None:
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from yrmpi.sweep.output import SweepLock; "
        f"SweepLock({str(out)!r}).acquire(); print('locked', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(SweepConfigError, match=f"pid {holder.pid} "):
            SweepLock(out).acquire()
    finally:
        holder.kill()
        holder.wait()
    SweepLock(out).acquire().release()  # the kernel dropped it with the process


def test_the_ranks_of_the_launchers_job_share_its_lock(tmp_path: Path) -> None:
    held = SweepLock(tmp_path).acquire()
    try:
        held.export()
        assert SweepLock(tmp_path).acquire().inherited  # rank 0 under this launcher
    finally:
        held.release()
    assert LOCK_ENV not in os.environ


# -- 5. sizing -------------------------------------------------------------------------------------
def _cfg(workers: int, **kw) -> SweepConfig:
    return SweepConfig(name="s", entry="x.py:C", run="run", params={"lr": Grid((0.1,))}, workers=workers, **kw)


def test_sizing_grows_about_linearly_in_workers() -> None:
    times = {}
    for workers in (1_000, 10_000):
        t = time.perf_counter()
        ranks, plan = size_launch(_cfg(workers), 1, cores=2)
        times[workers] = time.perf_counter() - t
        assert ranks == workers // 2 + 2 and plan.concurrency == 1  # 2 workers of 500 share a rank
    assert times[10_000] < 5.0, times  # the search used to take 6-12 s for 1,600 workers


def test_workers_and_ranks_have_upper_bounds_with_the_arithmetic(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, "workers: 100000\n")
    code, _, err = sweep_cmd(str(path), "--dry-run")
    assert_one_line_exit_2(code, err, match=r"workers: found integer 100000, expected an integer from 0 to 10000 "
                                            r"\(1 supervisor \+ 100000 workers = 100001 instances")
    with pytest.raises(SweepConfigError, match=r"-n: found 200000 ranks .* expected at most 100000"):
        size_launch(_cfg(1), 1, ranks=200_000)
    zero = Resources(cpu=0, memory=0)
    t = time.perf_counter()  # demands of zero fit without end: the simulation is bounded
    plan = sweep.plan_capacity(_cfg(10_000, supervisor_resources=zero, worker_resources=zero),
                               runner_mod.local_ranks(4), 100_000)
    assert plan.concurrency == 100_000 and time.perf_counter() - t < 10


# -- 7. one line and exit 2 instead of a traceback --------------------------------------------------
@pytest.mark.parametrize("out, match", [
    ("x" * 300, r"output: found a path with a 300-byte component"),
    ("a\0b", r"output: found a path with a NUL byte"),
    ("/" + "d/" * 2100, r"output: found a path of \d+ bytes"),
])
def test_output_paths_the_kernel_refuses_are_one_line(tmp_path: Path, out: str, match: str) -> None:
    code, _, err = sweep_cmd(str(write_sweep(tmp_path, out=out)))
    assert_one_line_exit_2(code, err, match=match)


def test_a_default_with_5000_digits_is_one_line(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, "workers: ${YRMPI_TEST_UNSET:-" + "1" * 5000 + "}\n")
    code, _, err = sweep_cmd(str(path), "--dry-run")
    assert_one_line_exit_2(code, err, match=r"workers: found a number of 5000 characters")


def test_unusable_output_folders_are_one_line_before_mpi(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "afile").write_text("x")
    for out, match in ((tmp_path / "afile", "Not a directory|File exists"), (Path("/dev/null"), "File exists"),
                       (tmp_path / "afile" / "sub", "Not a directory")):
        code, _, err = sweep_cmd(str(write_sweep(tmp_path, out=str(out))))
        assert_one_line_exit_2(code, err, match=rf"cannot use \(({match})")
    target = tmp_path / "ro"
    write_sweep(tmp_path, out=str(target))

    def read_only(_out):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(output_mod, "_probe", read_only)
    code, _, err = sweep_cmd(str(tmp_path / "s.yaml"))
    assert_one_line_exit_2(code, err, match=r"cannot use \(Read-only file system\)")
    monkeypatch.undo()
    monkeypatch.setattr(launch, "run", lambda *a, **k: pytest.fail("MPI would have been launched"))
    monkeypatch.setattr(output_mod.os, "statvfs", lambda _p: os.statvfs_result((4096, 4096, 1, 1, 10, 1, 1, 1, 0, 255)))
    code, _, err = sweep_cmd(str(tmp_path / "s.yaml"))
    assert_one_line_exit_2(code, err, match=r"found 0\.0 MB free, expected at least 16\.0 MB")


def test_a_journal_that_is_a_directory_is_one_line(tmp_path: Path) -> None:
    path = write_sweep(tmp_path)
    (tmp_path / "out" / "journal.jsonl").mkdir(parents=True)
    code, _, err = sweep_cmd(str(path))
    assert_one_line_exit_2(code, err, match=r"journal.jsonl: \(output\): found a directory")
    assert read_journal(tmp_path / "out")[0] == []


def test_deeply_nested_and_forged_journal_lines_are_skipped_with_a_warning(tmp_path: Path) -> None:
    path = write_sweep(tmp_path)
    cfg = load(path)
    out = Path(cfg.output)
    ids = [e.id for e in sweep.expand(cfg)]
    sweep.write_resolved_config(out, cfg.to_dict())
    lines = ["[" * 200_000 + "]" * 200_000,
             json.dumps({"event": "finished", "exp": ids[0]}),  # no metrics, no wall
             json.dumps({"event": "finished", "exp": ids[1], "metrics": [1], "wall": "x"}),
             json.dumps({"event": "finished", "exp": ids[1], "metrics": {"loss": {"a": [[[[1]]]] * 3}},
                         "wall": 1, "ts": "yesterday"}),
             json.dumps({"event": "started", "exp": ids[1], "attempt": "two"}),
             json.dumps({"event": "finished", "exp": ids[0], "metrics": _nest(100), "wall": 1})]
    (out / "journal.jsonl").write_text("\n".join(lines) + "\n")
    records, warnings = read_journal(out)
    assert records == [] and len(warnings) == len(lines)
    assert "no 'metrics'" in warnings[1] and "malformed 'metrics'" in warnings[2]
    assert "nested deeper" in warnings[5]
    text = sweep.report(out)
    assert "0 finished" in text and text.count("warning:") == len(lines)
    states = sweep.fold(records)
    assert len(runner_mod.resume_plan(sweep.expand(cfg), states, 0)) == 2  # both run again


def _nest(depth: int) -> dict:
    node: dict = {"x": 1}
    for _ in range(depth):
        node = {"x": node}
    return node


@pytest.mark.parametrize("body, match", [
    ("name: t\n", r"line 6 column 1: found invalid YAML .*found the key 'name' twice \(first on line 1\)"),
    ("workers: 1:30\n", r'workers: found string "1:30", expected an integer >= 0'),
    ("init: {scal: 2}\n", r"init.scal: found keyword argument 'scal', which Sup\(\) does not take, expected one "
                          r"of scale; did you mean 'scale'\?"),
    ("params: {lr: [1]}\n", r"found the key 'params' twice"),
])
def test_yaml_and_init_surprises_are_refused(tmp_path: Path, body: str, match: str) -> None:
    code, _, err = sweep_cmd(str(write_sweep(tmp_path, body)), "--dry-run")
    assert_one_line_exit_2(code, err, match=match)
    assert not (tmp_path / "out").exists()


def test_yaml_12_scalars_are_read_as_a_yaml_12_user_expects() -> None:
    doc = sweep.parse_yaml("a: on\nb: yes\nc: 1e-5\nd: 0o17\ne: 1_000\nf: true\n")
    assert doc == {"a": "on", "b": "yes", "c": 1e-5, "d": 15, "e": "1_000", "f": True}


# -- 8. files ---------------------------------------------------------------------------------------
def test_files_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        cfg = load(write_sweep(tmp_path))
        experiments = sweep.expand(cfg)
        out = Path(cfg.output)
        sweep.write_resolved_config(out, cfg.to_dict())
        Journal(out).queued_many(experiments)
        sweep.write_results(out, experiments, {}, cfg.metric, name=cfg.name)
        SweepLock(out).acquire().release()
    finally:
        os.umask(old)
    for name in ("config.yaml", "journal.jsonl", "results.csv", "summary.json", ".sweep.lock"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o640, name


def test_a_planted_symlink_is_never_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "journal.jsonl").symlink_to(victim)
    with pytest.raises(OSError):
        Journal(out).started("e1")
    with pytest.raises(SweepConfigError, match=r"journal.jsonl: \(output\): found a symlink"):
        check_output(out)
    (out / "results.csv").symlink_to(victim)
    sweep.write_results(out, [], {}, None)
    assert victim.read_text() == "precious\n" and not (out / "results.csv").is_symlink()


# -- 10. exit codes ---------------------------------------------------------------------------------
def test_exit_codes_are_distinct_documented_and_clear_of_other_meanings() -> None:
    codes = {launch.EXIT_OK, launch.EXIT_CONFIG, launch.EXIT_FAILED, launch.EXIT_LOST, launch.EXIT_OUTPUT,
             launch.EXIT_INTERRUPTED}
    assert codes == set(launch.EXIT_CODES) and len(codes) == 6
    assert 1 not in codes and all(c < 126 for c in codes)  # 1: a traceback; 126+: shell and signals
    assert (sweep.EXIT_FAILED, sweep.EXIT_LOST, sweep.EXIT_OUTPUT) == (3, 69, 73)
    docs = (Path(__file__).parents[1] / "docs" / "sweeps.md").read_text()
    for code in codes:
        assert re.search(rf"^\| {code} \|", docs, re.M), code


def test_the_launcher_reports_what_the_journal_says_when_the_job_dies(tmp_path: Path) -> None:
    cfg = load(write_sweep(tmp_path))
    experiments = sweep.expand(cfg)
    out = Path(cfg.output)
    assert sweep_cli._job_code(3, cfg, experiments) == 3  # the driver's own codes pass through
    assert sweep_cli._job_code(137, cfg, experiments) == sweep.EXIT_INTERRUPTED  # killed, work left
    assert sweep_cli._job_code(1, cfg, experiments) == sweep.EXIT_LOST  # rank 0 or MPI died
    Journal(out).queued_many(experiments)
    for e in experiments:
        Journal(out).finished(e.id, {"loss": 1.0}, wall=1.0)
    assert sweep_cli._job_code(1, cfg, experiments) == sweep.EXIT_OK  # a teardown failure after the end


def test_a_driver_whose_output_fails_mid_run_exits_73_with_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    path = write_sweep(tmp_path)

    def disk_full(*_a):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "journal.jsonl"))

    monkeypatch.setattr(runner_mod, "_drive", disk_full)
    assert runner_mod.drive(SweepOptions(str(path))) == sweep.EXIT_OUTPUT == 73
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0]
    SweepLock(tmp_path / "out").acquire().release()  # released on the way out


def test_a_driver_whose_launcher_died_exits_as_lost(monkeypatch) -> None:
    runner = SweepRunner.__new__(SweepRunner)
    runner._ppid = -1
    monkeypatch.setattr(runner_mod.os, "_exit", lambda code: (_ for _ in ()).throw(SystemExit(code)))
    with pytest.raises(SystemExit) as exc:
        runner._check_launcher()
    assert exc.value.code == sweep.EXIT_LOST
