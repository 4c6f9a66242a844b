"""Tests for yrmpi.sweep.journal: durable appends, torn lines, fold, resume, config.yaml."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import pytest
import yaml

import yrmpi.sweep._fs as fs_mod
import yrmpi.sweep.journal as journal_mod
from yrmpi.sweep.config import Experiment
from yrmpi.sweep.journal import (
    CONFIG_NAME,
    JOURNAL_NAME,
    Journal,
    fold,
    read_journal,
    resume_plan,
    write_resolved_config,
)


def exps(n: int) -> list[Experiment]:
    return [Experiment(f"e{i:011d}", {"lr": 10.0 ** -i}, 0, i) for i in range(n)]


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        self.t += 1
        return self.t


# ----------------------------------------------------------------- appending


def test_append_is_one_write_then_fsync(tmp_path: Path, monkeypatch) -> None:
    """One write call of the whole line on an O_APPEND | O_NOFOLLOW fd, then fsync."""
    calls: list[tuple] = []
    real_open_append, real_write_all, real_fsync = journal_mod.open_append, journal_mod.write_all, os.fsync

    def spy_open(path):
        fd = real_open_append(path)
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        calls.append(("open", Path(path).name, bool(flags & os.O_APPEND)))
        return fd

    monkeypatch.setattr(journal_mod, "open_append", spy_open)
    monkeypatch.setattr(journal_mod, "write_all",
                        lambda fd, data: (calls.append(("write", bytes(data))), real_write_all(fd, data))[1])
    monkeypatch.setattr(journal_mod.os, "fsync",
                        lambda fd: (calls.append(("fsync",)), real_fsync(fd))[1])
    j = Journal(tmp_path, clock=lambda: 5.0)
    j._prepare()
    calls.clear()
    rec = j.finished("abc", {"loss": 0.5}, wall=12.5)
    assert calls[0] == ("open", JOURNAL_NAME, True)
    writes = [c for c in calls if c[0] == "write"]
    assert len(writes) == 1
    line = writes[0][1]
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == rec == {"ts": 5.0, "event": "finished", "exp": "abc",
                                       "metrics": {"loss": 0.5}, "wall": 12.5}
    names = [c[0] for c in calls]
    assert names.index("write") < names.index("fsync")


def test_every_event_helper_and_fields(tmp_path: Path) -> None:
    j = Journal(tmp_path / "out", clock=Clock())  # folder is created on first append
    e = exps(1)[0]
    j.queued(e)
    j.started(e.id, attempt=1, rank=7)
    j.failed(e.id, "ValueError: boom", "Traceback (most recent call last):\n  ...\n", wall=3.0)
    j.retried(e.id, attempt=2, reason="supervisor failed")
    j.started(e.id, attempt=2)
    j.interrupted(e.id, reason="SIGTERM", wall=4.0)
    j.started(e.id, attempt=3)
    j.finished(e.id, {"loss": 0.1}, wall=9.0)
    records, warnings = read_journal(tmp_path / "out")
    assert warnings == []
    assert [r["event"] for r in records] == ["queued", "started", "failed", "retried", "started",
                                             "interrupted", "started", "finished"]
    assert all(set(r) >= {"ts", "event", "exp"} for r in records)
    assert records[0]["params"] == e.params and records[0]["seed"] == 0
    assert records[1]["rank"] == 7 and records[1]["attempt"] == 1
    assert records[2]["traceback"].startswith("Traceback")
    assert records[5]["reason"] == "SIGTERM"
    assert [r["ts"] for r in records] == sorted(r["ts"] for r in records)
    assert (tmp_path / "out" / JOURNAL_NAME).read_bytes().count(b"\n") == 8


def test_unknown_event_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown journal event 'done'"):
        Journal(tmp_path).append("done", "x")


def test_numpy_metrics_are_serialised(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    j = Journal(tmp_path)
    j.finished("x", {"loss": np.float32(0.25), "hist": np.arange(3), "n": np.int64(4)}, wall=1)
    (rec,), _ = read_journal(tmp_path)
    assert rec["metrics"] == {"loss": 0.25, "hist": [0, 1, 2], "n": 4}


# ----------------------------------------------------------------- torn lines


def test_torn_last_line_is_ignored_and_reported(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.started("a")
    j.finished("a", {"loss": 1}, wall=1)
    with open(j.path, "ab") as f:
        f.write(b'{"ts": 3, "event": "fini')  # killed mid-write
    records, warnings = read_journal(j.path)
    assert [r["event"] for r in records] == ["started", "finished"]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"{j.path}:3: ignored an incomplete last line (24 bytes")


def test_complete_last_line_without_newline_is_kept(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    path.write_bytes(b'{"ts": 1, "event": "started", "exp": "a"}')
    records, warnings = read_journal(tmp_path)
    assert records == [{"ts": 1, "event": "started", "exp": "a"}] and warnings == []


def test_append_after_torn_tail_starts_a_new_line(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.started("a")
    with open(j.path, "ab") as f:
        f.write(b'{"ts": 3, "ev')
    again = Journal(tmp_path)  # the resumed sweep
    again.finished("a", {"loss": 2}, wall=5)
    records, warnings = read_journal(tmp_path)
    assert [r["event"] for r in records] == ["started", "finished"]
    assert warnings == [f"{j.path}:2: skipped an unreadable line (13 bytes; a torn write from "
                        "an earlier crash?)"]


def test_torn_middle_line_and_garbage_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    good = [json.dumps({"ts": i, "event": "started", "exp": f"x{i}"}) for i in range(3)]
    path.write_bytes(b"\n".join([
        good[0].encode(),
        b'{"ts": 1, "event": "fin',            # torn
        b"",                                   # blank: ignored silently
        b"[1, 2]",                             # not an object
        b'{"ts": 1, "event": "bogus", "exp": "y"}',
        b'{"ts": 1, "event": "started"}',      # no exp
        good[1].encode(),
        b"\xff\xfe not utf-8",
        good[2].encode(),
    ]) + b"\n")
    records, warnings = read_journal(path)
    assert [r["exp"] for r in records] == ["x0", "x1", "x2"]
    assert [w.split(":")[1] for w in warnings] == ["2", "4", "5", "6", "8"]
    assert all("skipped an unreadable line" in w for w in warnings)


def test_missing_journal_is_empty(tmp_path: Path) -> None:
    assert read_journal(tmp_path) == ([], [])
    assert read_journal(tmp_path / JOURNAL_NAME) == ([], [])


# ----------------------------------------------------------------- fold


def _rec(event: str, exp: str, **fields) -> dict:
    return {"ts": fields.pop("ts", 1.0), "event": event, "exp": exp, **fields}


def test_fold_latest_state_attempts_restarts_metrics_error() -> None:
    states = fold([
        _rec("queued", "a", params={"lr": 1}, seed=3, index=0),
        _rec("queued", "b"),
        _rec("started", "a", ts=10, rank=4),
        _rec("failed", "a", error="boom", traceback="tb", wall=2),
        _rec("retried", "a"),
        _rec("started", "b", ts=11),
        _rec("started", "a", ts=12),
        _rec("finished", "a", metrics={"loss": 0.5}, wall=7),
        _rec("started", "c", ts=13),
        _rec("interrupted", "c", reason="SIGTERM"),
    ])
    a, b, c = states["a"], states["b"], states["c"]
    assert (a.status, a.event, a.attempts, a.restarts, a.failures) == (
        "finished", "finished", 2, 1, 1)
    assert a.metrics == {"loss": 0.5} and a.wall == 7.0 and a.error is None
    assert a.params == {"lr": 1} and a.seed == 3 and a.started_at == 12
    assert (b.status, b.attempts, b.restarts, b.started_at) == ("running", 1, 0, 11)
    assert (c.status, c.attempts) == ("interrupted", 1)


def test_fold_failed_keeps_error_and_retried_means_waiting() -> None:
    states = fold([_rec("started", "a", rank=2), _rec("failed", "a", error="E", traceback="T")])
    assert states["a"].status == "failed" and states["a"].error == "E"
    assert states["a"].traceback == "T" and states["a"].extra == {"rank": 2}
    states = fold([_rec("started", "a"), _rec("failed", "a", error="E"), _rec("retried", "a")])
    assert states["a"].status == "queued" and states["a"].event == "retried"


def test_requeue_on_resume_does_not_undo_states() -> None:
    states = fold([_rec("queued", "a"), _rec("started", "a"),
                   _rec("finished", "a", metrics={"loss": 1}, wall=1),
                   _rec("queued", "b"), _rec("started", "b"), _rec("failed", "b", error="E"),
                   _rec("queued", "a"), _rec("queued", "b"), _rec("queued", "c")])
    assert states["a"].status == "finished" and states["a"].metrics == {"loss": 1}
    assert states["b"].status == "failed" and states["c"].status == "queued"


def test_fold_ignores_malformed_records() -> None:
    assert fold([{"event": "nope", "exp": "a"}, {"event": "started"}, {}]) == {}


# ----------------------------------------------------------------- resume


def _states(*records: dict) -> dict:
    return fold(list(records))


def test_resume_skips_finished_reruns_unfinished() -> None:
    e = exps(5)
    states = _states(
        _rec("started", e[0].id), _rec("finished", e[0].id, metrics={}, wall=1),
        _rec("started", e[1].id),                                   # running when job died
        _rec("started", e[2].id), _rec("interrupted", e[2].id),
        _rec("queued", e[3].id),
        # e[4] never seen
    )
    assert resume_plan(e, states, retries=0) == e[1:]


def test_resume_failed_experiments_obey_retries() -> None:
    e = exps(1)
    once = _states(_rec("started", e[0].id), _rec("failed", e[0].id, error="x"))
    assert resume_plan(e, once, retries=0) == []
    assert resume_plan(e, once, retries=1) == e  # attempts (1) <= retries (1)
    twice = _states(_rec("started", e[0].id), _rec("failed", e[0].id, error="x"),
                    _rec("started", e[0].id), _rec("failed", e[0].id, error="x"))
    assert resume_plan(e, twice, retries=1) == []
    assert resume_plan(e, twice, retries=2) == e


def test_interruptions_do_not_use_up_retries() -> None:
    e = exps(1)
    states = _states(_rec("started", e[0].id), _rec("interrupted", e[0].id),
                     _rec("started", e[0].id), _rec("failed", e[0].id, error="x"))
    assert states[e[0].id].attempts == 2 and states[e[0].id].failures == 1
    assert resume_plan(e, states, retries=1) == e


def test_resume_keeps_sweep_order_and_ignores_unknown_ids() -> None:
    e = exps(4)
    states = _states(_rec("finished", e[1].id), _rec("finished", "zzz"))
    assert [x.index for x in resume_plan(e, states, 0)] == [0, 2, 3]


def test_journal_round_trip_resume(tmp_path: Path) -> None:
    e = exps(3)
    j = Journal(tmp_path)
    for x in e:
        j.queued(x)
    j.started(e[0].id)
    j.finished(e[0].id, {"loss": 1.0}, wall=2.0)
    j.started(e[1].id)
    with open(j.path, "ab") as f:
        f.write(b'{"ts":')
    records, warnings = read_journal(tmp_path)
    assert len(warnings) == 1
    assert resume_plan(e, fold(records), retries=0) == e[1:]


# ----------------------------------------------------------------- config.yaml


def test_write_resolved_config_is_atomic_and_round_trips(tmp_path: Path) -> None:
    data = {"name": "s", "params": {"lr": [0.1, 0.01], "wd": {"loguniform": [1e-5, 1e-2]}},
            "metric": None, "seeds": [0, 1]}
    path = write_resolved_config(tmp_path / "out", data)
    assert path == tmp_path / "out" / CONFIG_NAME
    assert yaml.safe_load(path.read_text()) == data
    assert list(yaml.safe_load(path.read_text())) == list(data)  # key order kept
    write_resolved_config(tmp_path / "out", {"name": "t"})
    assert yaml.safe_load(path.read_text()) == {"name": "t"}
    assert sorted(p.name for p in path.parent.iterdir()) == [CONFIG_NAME]  # no tmp left


def test_failed_config_write_keeps_old_file(tmp_path: Path, monkeypatch) -> None:
    write_resolved_config(tmp_path, {"name": "old"})

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(fs_mod.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_resolved_config(tmp_path, {"name": "new"})
    assert yaml.safe_load((tmp_path / CONFIG_NAME).read_text()) == {"name": "old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [CONFIG_NAME]


def test_config_write_fsyncs_before_rename(tmp_path: Path, monkeypatch) -> None:
    order: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(fs_mod.os, "fsync", lambda fd: (order.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(fs_mod.os, "replace",
                        lambda a, b: (order.append("replace"), real_replace(a, b))[1])
    write_resolved_config(tmp_path, {"name": "x"})
    assert order[:2] == ["fsync", "replace"]
