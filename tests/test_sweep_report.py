"""Tests for yrmpi.sweep.report: ranking, status line, results files, plot, report()."""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from pathlib import Path

import pytest

from yrmpi.sweep.config import Experiment, Metric, SweepConfigError, expand, load_dict
from yrmpi.sweep.journal import Journal, fold, read_journal, write_resolved_config
from yrmpi.sweep.report import (
    best,
    metric_value,
    normalize_metrics,
    plot,
    rank,
    ranked_table,
    report,
    status_line,
    write_results,
)

MIN = Metric("loss", "min")
MAX = Metric("acc", "max")


def exps() -> list[Experiment]:
    return [Experiment(f"id{i:010d}", {"lr": lr, "epochs": 5}, 0, i)
            for i, lr in enumerate([0.1, 0.01, 0.001, 0.0001, 1e-5, 1e-6])]


def states_for(e: list[Experiment]) -> dict:
    """e0 loss 0.5, e1 loss 0.2, e2 loss 0.9, e3 failed, e4 running, e5 never started."""
    records = []
    for x, loss, acc in ((e[0], 0.5, 0.7), (e[1], 0.2, 0.6), (e[2], 0.9, 0.9)):
        records += [{"ts": 1, "event": "started", "exp": x.id},
                    {"ts": 2, "event": "finished", "exp": x.id,
                     "metrics": {"loss": loss, "acc": acc}, "wall": 60 * (x.index + 1)}]
    records += [{"ts": 1, "event": "started", "exp": e[3].id},
                {"ts": 2, "event": "failed", "exp": e[3].id, "error": "ValueError: boom\nline2",
                 "traceback": "tb", "wall": 5},
                {"ts": 3, "event": "retried", "exp": e[3].id},
                {"ts": 4, "event": "started", "exp": e[3].id},
                {"ts": 5, "event": "failed", "exp": e[3].id, "error": "ValueError: boom",
                 "traceback": "tb", "wall": 6},
                {"ts": 100, "event": "started", "exp": e[4].id}]
    return fold(records)


def test_rank_min_and_max() -> None:
    e = exps()
    st = states_for(e)
    assert [x.index for x, _ in rank(e, st, MIN)] == [1, 0, 2, 4, 5, 3]
    assert [x.index for x, _ in rank(e, st, MAX)] == [2, 0, 1, 4, 5, 3]
    assert [x.index for x, _ in rank(e, st, None)] == [0, 1, 2, 4, 5, 3]


def test_best() -> None:
    e = exps()
    st = states_for(e)
    assert best(e, st, MIN)[0].index == 1
    assert best(e, st, MAX)[0].index == 2
    assert best(e, {}, MIN) is None
    assert best(e, st, Metric("missing", "min")) is None


def test_metric_value_only_for_finite_numbers_of_finished() -> None:
    st = fold([{"event": "finished", "exp": "a", "metrics": {"loss": float("nan")}},
               {"event": "finished", "exp": "b", "metrics": {"loss": "low"}},
               {"event": "finished", "exp": "c", "metrics": {"loss": True}},
               {"event": "finished", "exp": "d", "metrics": {"loss": 3}}])
    assert [metric_value(st[k], MIN) for k in "abcd"] == [None, None, None, 3.0]


def test_ranked_table_min() -> None:
    e = exps()
    text = ranked_table(e, states_for(e), MIN)
    lines = text.splitlines()
    assert lines[0].split() == ["rank", "id", "seed", "lr", "loss", "wall", "restarts", "status"]
    assert [line.split()[:2] for line in lines[1:7]] == [
        ["1", e[1].id], ["2", e[0].id], ["3", e[2].id], ["-", e[4].id], ["-", e[5].id],
        ["-", e[3].id]]
    assert lines[1].split()[3:] == ["0.01", "0.2", "2m00s", "0", "finished"]
    assert lines[4].split()[4:] == ["-", "-", "0", "running"]
    assert lines[5].split()[4:] == ["-", "-", "0", "queued"]
    assert lines[6].split()[4:] == ["-", "6s", "1", "failed:", "ValueError:", "boom"]
    assert lines[-1] == "same in every experiment: epochs=5"


def test_ranked_table_max_and_no_metric() -> None:
    e = exps()
    st = states_for(e)
    lines = ranked_table(e, st, MAX).splitlines()
    assert [line.split()[1] for line in lines[1:4]] == [e[2].id, e[0].id, e[1].id]
    assert lines[1].split()[4] == "0.9"
    no_metric = ranked_table(e, st, None).splitlines()
    assert no_metric[0].split() == ["rank", "id", "seed", "lr", "wall", "restarts", "status"]


def test_status_line() -> None:
    e = exps()
    st = states_for(e)
    now = 1000.0
    line = status_line(st, 6, now - 3725, now, MIN, concurrency=2, name="lr-sweep")
    assert "\n" not in line
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
    # mean wall 120s; 1 queued -> 120s, running since ts 100 (900s ago) -> 0s left; / 2 slots
    assert line == (f"[{stamp}] lr-sweep: 3/6 done, 1 running, 1 queued, 1 failed | "
                    f"best loss=0.2 ({e[1].id}) | elapsed 1h02m | ETA ~1m00s")


def test_status_line_before_anything_finished_and_when_done() -> None:
    assert status_line({}, 24, 0.0, 30.0, MIN).endswith(
        "sweep: 0/24 done, 0 running, 24 queued, 0 failed | best loss=- | elapsed 30s | ETA ?")
    st = fold([{"event": "finished", "exp": "a", "metrics": {}, "wall": 3}])
    assert status_line(st, 1, 0.0, 5.0, None).endswith(
        "sweep: 1/1 done, 0 running, 0 queued, 0 failed | elapsed 5s | ETA 0s")


def test_status_line_eta_uses_running_count_without_concurrency() -> None:
    st = fold([{"event": "started", "exp": "a", "ts": 0},
               {"event": "finished", "exp": "a", "metrics": {"loss": 1}, "wall": 100},
               {"event": "started", "exp": "b", "ts": 90},
               {"event": "started", "exp": "c", "ts": 90}])
    # 2 queued x 100 + 2 running x (100 - 10) = 380 seconds over 2 running slots
    assert status_line(st, 5, 0.0, 100.0, MIN).endswith("ETA ~3m10s")


def test_write_results_csv_and_summary(tmp_path: Path) -> None:
    e = exps()
    st = states_for(e)
    csv_path, json_path = write_results(tmp_path, e, st, MIN, name="lr-sweep")
    assert (csv_path.name, json_path.name) == ("results.csv", "summary.json")
    rows = list(csv.DictReader(csv_path.open()))
    assert list(rows[0]) == ["rank", "id", "index", "seed", "status", "param.lr", "param.epochs",
                             "metric.loss", "metric.acc", "wall", "attempts", "restarts",
                             "error"]
    assert [r["id"] for r in rows] == [e[i].id for i in (1, 0, 2, 4, 5, 3)]
    assert [r["rank"] for r in rows] == ["1", "2", "3", "", "", ""]
    assert rows[0]["metric.loss"] == "0.2" and rows[0]["param.lr"] == "0.01"
    assert rows[0]["wall"] == "120.0" and rows[0]["status"] == "finished"
    assert rows[5]["status"] == "failed" and rows[5]["error"] == "ValueError: boom"
    assert rows[5]["attempts"] == "2" and rows[5]["restarts"] == "1"
    assert rows[4]["status"] == "queued" and rows[4]["metric.loss"] == ""
    summary = json.loads(json_path.read_text())
    assert summary["name"] == "lr-sweep" and summary["metric"] == {"name": "loss", "mode": "min"}
    assert summary["total"] == 6
    assert summary["counts"] == {"finished": 3, "stopped": 0, "running": 1, "failed": 1, "queued": 1}
    assert summary["best"]["id"] == e[1].id and summary["best"]["metrics"]["loss"] == 0.2
    assert summary["best"]["params"] == {"lr": 0.01, "epochs": 5}
    assert summary["ranking"] == [e[1].id, e[0].id, e[2].id]
    assert [x["id"] for x in summary["experiments"]] == [r["id"] for r in rows]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv", "summary.json"]


def test_summary_is_strict_json_with_nan_metrics(tmp_path: Path) -> None:
    e = exps()[:1]
    st = fold([{"event": "finished", "exp": e[0].id, "metrics": {"loss": float("nan")},
                "wall": 1}])
    _, json_path = write_results(tmp_path, e, st, MIN)
    text = json_path.read_text()
    assert "NaN" not in text
    summary = json.loads(text)
    assert summary["best"] is None and summary["experiments"][0]["metrics"] == {"loss": None}


def test_plot_without_matplotlib_returns_none(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import now fails
    e = exps()
    assert plot(tmp_path, e, states_for(e), MIN) is None
    assert not (tmp_path / "metric.png").exists()


def test_plot_with_matplotlib(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    e = exps()
    path = plot(tmp_path, e, states_for(e), MIN)
    assert path == tmp_path / "metric.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot(tmp_path, e, {}, MIN) is None


def test_normalize_metrics() -> None:
    assert normalize_metrics({"loss": 1, 2: "x"}, MIN) == {"loss": 1, "2": "x"}
    assert normalize_metrics(0.5, MIN) == {"loss": 0.5}
    assert normalize_metrics(0.5, None) == {"result": 0.5}
    assert normalize_metrics(None, MIN) == {}
    assert normalize_metrics("done", MIN) == {"result": "done"}
    assert normalize_metrics(object(), MIN)["result"].startswith("<object")
    np = pytest.importorskip("numpy")
    assert normalize_metrics(np.float64(0.25), MIN) == {"loss": 0.25}


# ----------------------------------------------------------------- report(dir)


def _sweep(tmp_path: Path) -> tuple[Path, list[Experiment]]:
    doc = {"name": "rep", "entry": "m:C", "run": "r", "metric": {"name": "loss", "mode": "max"},
           "params": {"lr": [0.1, 0.2, 0.3], "note": "$HOME ${NOT_EXPANDED_AGAIN}"}}
    cfg = load_dict(doc, check_entry=False, expand_vars=False)
    out = tmp_path / "results" / "rep"
    write_resolved_config(out, cfg.to_dict())
    return out, expand(cfg)


def test_report_from_folder_while_running(tmp_path: Path) -> None:
    out, e = _sweep(tmp_path)
    j = Journal(out)
    for x in e:
        j.queued(x)
    j.started(e[0].id)
    j.finished(e[0].id, {"loss": 1.0}, wall=10)
    j.started(e[1].id)
    j.finished(e[1].id, {"loss": 3.0}, wall=12)
    j.started(e[2].id)
    with open(j.path, "ab") as f:
        f.write(b'{"ts": 9, "event": "fin')
    text = report(out)
    lines = text.splitlines()
    assert lines[0] == "sweep rep: 3 experiments, metric loss (max)"
    assert lines[1] == "2 finished, 1 running, 0 queued, 0 failed"
    assert lines[3].split()[:5] == ["rank", "id", "seed", "lr", "loss"]
    assert [line.split()[1] for line in lines[4:7]] == [e[1].id, e[0].id, e[2].id]
    assert f"best: {e[1].id} seed=0 lr=0.2 note=$HOME ${{NOT_EXPANDED_AGAIN}} -> loss=3" in text
    assert lines[-1].startswith("warning: ") and "incomplete last line" in lines[-1]


def test_report_mentions_experiments_not_in_config(tmp_path: Path) -> None:
    out, e = _sweep(tmp_path)
    j = Journal(out)
    j.finished("0123456789ab", {"loss": 9}, wall=1)
    text = report(out)
    assert "warning: 1 experiment(s) in the journal are not in config.yaml" in text
    assert "0123456789ab" not in text.split("warning")[0]
    assert "0 finished, 0 running, 3 queued, 0 failed" in text


def test_report_without_config_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(SweepConfigError, match=r"config.yaml: \(file\): found no readable file"):
        report(tmp_path)


def test_report_matches_write_results(tmp_path: Path) -> None:
    out, e = _sweep(tmp_path)
    j = Journal(out)
    for i, x in enumerate(e):
        j.started(x.id)
        j.finished(x.id, {"loss": [0.5, math.pi, 2.0][i]}, wall=1)
    records, warnings = read_journal(out)
    assert warnings == []
    write_results(out, e, fold(records), Metric("loss", "max"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best"]["id"] == e[1].id
    assert report(out).splitlines()[4].split()[1] == e[1].id
