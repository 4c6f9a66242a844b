"""The sweep runner's pure parts, in-process (no MPI): sizing, errors, exit codes, CLI, signals."""

from __future__ import annotations

import os
import pickle
import signal
from pathlib import Path

import cloudpickle
import pytest

import yrmpi
from yrmpi import sweep
from yrmpi.cli import main
from yrmpi.core.errors import invoke_error
from yrmpi.sweep.config import Grid, Resources, SweepConfig, SweepConfigError
from yrmpi.sweep.runner import (
    StopRequest,
    SweepOptions,
    describe_error,
    exit_code,
    load_config,
    prepare_output,
    size_launch,
)


@pytest.fixture(autouse=True)
def fixed_ranks(monkeypatch) -> None:
    """Rank capacity must not depend on this machine's memory or environment."""
    monkeypatch.setenv("YRMPI_MEMORY_PER_RANK", "4000")
    monkeypatch.delenv("YRMPI_CPU_PER_RANK", raising=False)
    monkeypatch.delenv("YRMPI_RESOURCES", raising=False)
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)


def config(**kw) -> SweepConfig:
    base = dict(name="s", entry="x.py:C", run="run", params={"lr": Grid((0.1, 0.01, 0.001))}, workers=2,
                supervisor_resources=Resources(cpu=100, memory=200), worker_resources=Resources(cpu=1000, memory=300),
                seeds=(0, 1))
    base.update(kw)
    return SweepConfig(**base)


# -- how many ranks a local launch gets -----------------------------------------------------------
def test_size_launch_follows_max_concurrent() -> None:
    ranks, plan = size_launch(config(max_concurrent=3), 6)
    assert ranks == 8  # 3 supervisors share one rank, 6 workers take one rank each, + the driver
    assert plan.concurrency == 3 and plan.waves == 2


def test_size_launch_fits_this_machines_cores_without_max_concurrent() -> None:
    assert size_launch(config(), 6, cores=2)[0] == 4  # 2100 millicores > 2 cores: one at a time
    ranks, plan = size_launch(config(), 6, cores=8)  # 8000 // 2100 = 3 at once
    assert ranks == 8 and plan.concurrency == 3


def test_size_launch_never_exceeds_what_is_left_and_honours_n() -> None:
    assert size_launch(config(max_concurrent=5), 1)[0] == 4
    ranks, plan = size_launch(config(), 6, ranks=5)
    assert ranks == 5 and plan.concurrency == 1


def test_size_launch_reports_an_experiment_that_fits_no_rank() -> None:
    with pytest.raises(SweepConfigError, match="resources.worker"):
        size_launch(config(worker_resources=Resources(cpu=4000)), 6)


# -- errors, exit codes ---------------------------------------------------------------------------
def test_describe_error_of_a_remote_exception() -> None:
    err = invoke_error(ValueError("bad lr\nsecond line"), "ValueError", "bad lr\nsecond line",
                       "Traceback ...\nValueError: bad lr\n", "Sup instance 1, rank 3")
    line, tb = describe_error(err)
    assert line == "ValueError: bad lr"
    assert "rank 3" in tb and "ValueError: bad lr" in tb


def test_describe_error_of_a_local_exception() -> None:
    try:
        raise TimeoutError("too slow")
    except TimeoutError as exc:
        line, tb = describe_error(exc)
    assert line == "TimeoutError: too slow" and "raise TimeoutError" in tb


def test_exit_code() -> None:
    cfg = config(retries=1)
    experiments = sweep.expand(cfg)
    a, b = experiments[0].id, experiments[1].id
    finished = [{"event": "finished", "exp": e.id, "metrics": {}} for e in experiments]
    assert exit_code(cfg, experiments, finished) == sweep.EXIT_OK == 0
    failed_once = finished[1:] + [{"event": "failed", "exp": a}]
    assert exit_code(cfg, experiments, failed_once) == sweep.EXIT_INTERRUPTED == 75  # a retry is left
    failed_twice = failed_once + [{"event": "failed", "exp": a}]
    assert exit_code(cfg, experiments, failed_twice) == sweep.EXIT_FAILED == 3
    assert exit_code(cfg, experiments, [r for r in finished if r["exp"] != b]) == 75


# -- Trial ----------------------------------------------------------------------------------------
def test_trial_is_exported_and_pickles() -> None:
    trial = sweep.Trial(id="abc", seed=3, workers=2, worker_options=yrmpi.InvokeOptions(cpu=1000), attempt=2)
    for dumps, loads in ((pickle.dumps, pickle.loads), (cloudpickle.dumps, cloudpickle.loads)):
        back = loads(dumps(trial))
        assert back == trial and back.worker_options.cpu == 1000
    with pytest.raises(AttributeError):
        trial.seed = 4  # frozen: a supervisor cannot change what the runner journals


# -- options, output folder -----------------------------------------------------------------------
ENTRY = "class Sup:\n    def run(self, params, trial):\n        return {'loss': params['lr']}\n"


def write_sweep(tmp_path: Path) -> Path:
    (tmp_path / "entry.py").write_text(ENTRY)
    path = tmp_path / "s.yaml"
    path.write_text(f"name: s\nentry: entry.py:Sup\nrun: run\nparams: {{lr: [0.1, 0.2]}}\noutput: {tmp_path}/out\n")
    return path


def test_load_config_applies_command_line_options(tmp_path: Path) -> None:
    path = write_sweep(tmp_path)
    cfg = load_config(SweepOptions(str(path), overrides=["retries=2"], output=str(tmp_path / "o"),
                                   max_concurrent=4))
    assert (cfg.retries, cfg.output, cfg.max_concurrent) == (2, str(tmp_path / "o"), 4)


def test_fresh_moves_the_earlier_run_aside(tmp_path: Path, monkeypatch) -> None:
    path = write_sweep(tmp_path)
    cfg = load_config(SweepOptions(str(path)))
    out = Path(cfg.output)
    sweep.Journal(out).started("e1", attempt=1)
    (out / "results.csv").write_text("old")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # a requeued job never starts over
    _, records, _ = prepare_output(cfg, SweepOptions(str(path), fresh=True))
    assert len(records) == 1
    monkeypatch.delenv("SLURM_RESTART_COUNT")
    folder, records, _ = prepare_output(cfg, SweepOptions(str(path), fresh=True))
    assert folder == out.absolute() and records == []
    (backup,) = out.glob("previous-*")
    assert (backup / "journal.jsonl").exists() and (backup / "results.csv").read_text() == "old"


# -- command line ---------------------------------------------------------------------------------
def test_cli_lists_and_checks_sweep_commands(capsys) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "yrmpi sweep FILE.yaml" in text and "yrmpi report DIR" in text and "yrmpi run" in text
    with pytest.raises(SystemExit) as exc:
        main(["sweep", "x.yaml", "--resume", "--fresh"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        main(["sweep", "x.yaml", "--max-concurrent", "0"])
    assert main(["sweep", "no-such.yaml", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("no-such.yaml: (file): found no readable file")


def test_report_command_accepts_the_yaml(tmp_path: Path, capsys) -> None:
    path = write_sweep(tmp_path)
    cfg = load_config(SweepOptions(str(path)))
    sweep.write_resolved_config(cfg.output, cfg.to_dict())
    assert main(["report", str(path)]) == 0
    assert "sweep s: 2 experiments" in capsys.readouterr().out


# -- signals --------------------------------------------------------------------------------------
def test_stop_request_only_counts_signals(monkeypatch) -> None:
    clock = iter([100.0, 100.2, 101.5])  # the second signal is the same one delivered twice
    monkeypatch.setattr("yrmpi.sweep.runner.time.monotonic", lambda: next(clock))
    stop = StopRequest()
    stop.install()
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGTERM)
    finally:
        stop.restore()
    assert stop.count == 2 and stop.name == "SIGUSR1"
    assert signal.getsignal(signal.SIGTERM) != stop._on_signal


def test_queued_many_is_one_durable_write(tmp_path: Path, monkeypatch) -> None:
    experiments = sweep.expand(config())
    fsyncs = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsyncs.append(fd), real_fsync(fd)))
    journal = sweep.Journal(tmp_path)
    journal.queued_many(experiments[:1])  # the first call also creates the file
    fsyncs.clear()
    journal.queued_many(experiments[1:])
    assert len(fsyncs) == 1
    records, warnings = sweep.read_journal(tmp_path)
    assert not warnings and [r["exp"] for r in records] == [e.id for e in experiments]
    states = sweep.fold(records)
    assert all(states[e.id].status == "queued" and states[e.id].params == e.params for e in experiments)
    assert journal.queued_many([]) == []
