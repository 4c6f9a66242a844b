"""What the user sees of a sweep: status lines, the ranked table, results files, a plot.

Everything here is computed from experiments + folded journal states, so the same code
serves the live status line of a running sweep, its final summary, and
``report(folder)`` on a folder at any later time (even while the sweep still runs).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ._fs import atomic_write
from ._text import fmt_duration, fmt_params, fmt_value, split_params, table
from .config import Experiment, Metric, SweepConfigError, load_dict
from .journal import CONFIG_NAME, DONE, ExperimentState, experiments_of, fold, read_journal

__all__ = [
    "RESULTS_CSV",
    "SUMMARY_JSON",
    "PLOT_PNG",
    "best",
    "metric_value",
    "normalize_metrics",
    "plot",
    "rank",
    "ranked_table",
    "report",
    "status_line",
    "write_results",
]

RESULTS_CSV = "results.csv"
SUMMARY_JSON = "summary.json"
PLOT_PNG = "metric.png"

Row = tuple[Experiment, "ExperimentState | None"]


def normalize_metrics(result: Any, metric: Metric | None) -> dict:
    """The metrics dict to journal for what ``run`` returned.

    A mapping is kept (non-string keys stringified); a bare number becomes
    ``{metric.name: value}``; anything else is kept under ``"result"`` when JSON can hold it.
    """
    if result is None:
        return {}
    if isinstance(result, Mapping):
        return {str(k): v for k, v in result.items()}
    item = getattr(result, "item", None)  # numpy scalar
    if callable(item):
        try:
            result = item()
        except Exception:
            pass
    if isinstance(result, (int, float)) and not isinstance(result, bool):
        return {metric.name if metric else "result": result}
    try:
        json.dumps(result)
    except (TypeError, ValueError):
        return {"result": repr(result)}
    return {"result": result}


def metric_value(state: ExperimentState | None, metric: Metric | None) -> float | None:
    """The finite numeric metric of a finished experiment, else None (not rankable)."""
    if state is None or metric is None or state.status not in DONE or not state.metrics:
        return None
    value = state.metrics.get(metric.name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


_GROUP = {"finished": 1, "stopped": 1, "running": 2, "interrupted": 3, "queued": 3, "failed": 4}


def rank(experiments: Sequence[Experiment], states: Mapping[str, ExperimentState],
         metric: Metric | None) -> list[Row]:
    """Experiments best first: ranked by metric (finished, and stopped early by their last
    report), then finished without metric, running, waiting, failed last; ties keep sweep order."""
    def key(e: Experiment) -> tuple:
        st = states.get(e.id)
        value = metric_value(st, metric)
        if value is not None:
            assert metric is not None
            return (0, value if metric.mode == "min" else -value, e.index)
        return (_GROUP.get(st.status if st else "queued", 3), 0.0, e.index)

    return [(e, states.get(e.id)) for e in sorted(experiments, key=key)]


def best(experiments: Sequence[Experiment], states: Mapping[str, ExperimentState],
         metric: Metric | None) -> Row | None:
    """The winning (experiment, state), or None when nothing finished with a metric."""
    rows = rank(experiments, states, metric)
    if rows and metric_value(rows[0][1], metric) is not None:
        return rows[0]
    return None


def _counts(states: Mapping[str, ExperimentState], total: int) -> dict[str, int]:
    done = sum(1 for s in states.values() if s.status == "finished")
    stopped = sum(1 for s in states.values() if s.status == "stopped")
    running = sum(1 for s in states.values() if s.status == "running")
    failed = sum(1 for s in states.values() if s.status == "failed")
    return {"finished": done, "stopped": stopped, "running": running, "failed": failed,
            "queued": max(total - done - stopped - running - failed, 0)}


def _best_state(states: Mapping[str, ExperimentState], metric: Metric | None) -> ExperimentState | None:
    """The winner by the same order as :func:`rank` (metric, then sweep position), so the status
    line, the table and summary.json always name the same experiment."""
    scored = [(v if metric.mode == "min" else -v, s.index if s.index is not None else 1 << 62, s.id, s)
              for s in states.values() if metric is not None and (v := metric_value(s, metric)) is not None]
    return min(scored, key=lambda t: t[:3])[3] if scored else None


def _best_text(states: Mapping[str, ExperimentState], metric: Metric | None) -> str | None:
    if metric is None:
        return None
    win = _best_state(states, metric)
    if win is None:
        return f"best {metric.name}=-"
    return f"best {metric.name}={fmt_value(metric_value(win, metric))} ({win.id})"


def _steps_text(states: Mapping[str, ExperimentState], limit: int = 6) -> str | None:
    """``steps e01e4e47a1b2@5 ...``: where each running experiment that reports is."""
    running = sorted((s for s in states.values() if s.status == "running" and s.step is not None),
                     key=lambda s: (s.index if s.index is not None else 1 << 62, s.id))
    if not running:
        return None
    shown = " ".join(f"{s.id}@{fmt_value(s.step)}" for s in running[:limit])
    return "steps " + shown + (f" (+{len(running) - limit})" if len(running) > limit else "")


def status_line(states: Mapping[str, ExperimentState], total: int, started_at: float,
                now: float, metric: Metric | None, *, concurrency: int | None = None,
                name: str | None = None) -> str:
    """One plain-text line for the log every ``status_interval`` seconds.

    ETA = (waiting experiments x mean wall time + what running ones still need) divided by
    ``concurrency`` (default: how many run now); "?" until one experiment has finished.
    """
    c = _counts(states, total)
    stopped = f", {c['stopped']} stopped" if c["stopped"] else ""
    parts = [f"{c['finished'] + c['stopped']}/{total} done{stopped}, {c['running']} running, "
             f"{c['queued']} queued, {c['failed']} failed"]
    best_text = _best_text(states, metric)
    if best_text:
        parts.append(best_text)
    steps = _steps_text(states)
    if steps:
        parts.append(steps)
    parts.append(f"elapsed {fmt_duration(now - started_at)}")
    walls = [s.wall for s in states.values() if s.status in DONE and s.wall is not None]
    if c["queued"] == 0 and c["running"] == 0:
        parts.append("ETA 0s")
    elif not walls:
        parts.append("ETA ?")
    else:
        mean = sum(walls) / len(walls)
        left = c["queued"] * mean
        for s in states.values():
            if s.status == "running":
                ran = now - s.started_at if s.started_at is not None else 0.0
                left += max(mean - ran, 0.0)
        slots = concurrency or max(c["running"], 1)
        parts.append(f"ETA ~{fmt_duration(left / slots)}")
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
    return f"[{stamp}] {name or 'sweep'}: " + " | ".join(parts)


def _status_text(st: ExperimentState | None) -> str:
    if st is None:
        return "queued"
    if st.status == "failed" and st.error:
        first = st.error.strip().splitlines()[0] if st.error.strip() else ""
        if len(first) > 60:
            first = first[:57] + "..."
        return f"failed: {first}" if first else "failed"
    if st.status == "stopped" and st.step is not None:
        return f"stopped at step {fmt_value(st.step)}"
    if st.status == "running" and st.step is not None:
        return f"running (step {fmt_value(st.step)})"
    return st.status


def ranked_table(experiments: Sequence[Experiment], states: Mapping[str, ExperimentState],
                 metric: Metric | None) -> str:
    """Plain-text table, best first: rank, id, seed, varying params, metric, wall,
    restarts, status; params equal in every experiment are listed once below."""
    rows = rank(experiments, states, metric)
    varying, constant = split_params([e.params for e in experiments])
    header = ["rank", "id", "seed", *varying]
    if metric is not None:
        header.append(metric.name)
    header += ["wall", "restarts", "status"]
    body = []
    position = 0
    for e, st in rows:
        value = metric_value(st, metric)
        if value is not None:
            position += 1
        cells = [str(position) if value is not None else "-", e.id, str(e.seed)]
        cells += [fmt_value(e.params.get(k)) for k in varying]
        if metric is not None:
            cells.append(fmt_value(value) if value is not None else "-")
        wall = st.wall if st is not None and st.status in (*DONE, "failed") else None
        cells += [fmt_duration(wall), str(st.restarts if st else 0), _status_text(st)]
        body.append(cells)
    text = table(header, body)
    if constant:
        text += "\nsame in every experiment: " + fmt_params(constant)
    return text


def _summary_entry(e: Experiment, st: ExperimentState | None) -> dict:
    return {
        "id": e.id, "index": e.index, "seed": e.seed, "params": e.params,
        "status": st.status if st else "queued",
        "metrics": st.metrics if st else None,
        "wall": st.wall if st else None,
        "attempts": st.attempts if st else 0,
        "restarts": st.restarts if st else 0,
        "error": st.error if st else None,
        "step": st.step if st else None,
        "reports": st.reports if st else 0,
        "reason": st.reason if st and st.status == "stopped" else None,
    }


def _strict_json(value: Any) -> Any:
    """NaN/inf become null: summary.json must load in any JSON parser, not just Python's."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return _plain(value, _strict_json)


def _plain(value: Any, then: Any) -> Any:
    """A numpy/torch scalar or array as the number or list it holds (``item()``, ``tolist()``)."""
    for attr in ("item", "tolist"):
        fn = getattr(value, attr, None)
        if callable(fn):
            try:
                out = fn()
            except Exception:
                continue
            if type(out) is not type(value):
                return then(out)
    return repr(value)


def _csv_cell(value: Any) -> str:
    """Plain numbers and strings: never ``np.float64(...)`` or ``array([...])`` text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, float):
        return repr(float(value))
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(_strict_json(value), sort_keys=True)
    plain = _plain(value, lambda v: v)
    if isinstance(plain, str) or plain is None or isinstance(plain, (bool, int, float)):
        return _csv_cell(plain) if not isinstance(plain, str) else plain
    return json.dumps(_strict_json(plain), sort_keys=True)


def write_results(directory: str | os.PathLike, experiments: Sequence[Experiment],
                  states: Mapping[str, ExperimentState], metric: Metric | None, *,
                  name: str | None = None) -> tuple[Path, Path]:
    """Write ``results.csv`` (one row per experiment, best first) and ``summary.json``.

    Both are written atomically so a reader never sees half a file.  CSV columns:
    rank, id, index, seed, status, ``param.<name>``..., ``metric.<name>``..., wall,
    attempts, restarts, error.
    """
    rows = rank(experiments, states, metric)
    param_names: list[str] = []
    metric_names: list[str] = [metric.name] if metric else []
    for e, st in rows:
        param_names += [k for k in e.params if k not in param_names]
        if st and st.metrics:
            metric_names += [k for k in st.metrics if k not in metric_names]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["rank", "id", "index", "seed", "status",
                     *(f"param.{k}" for k in param_names),
                     *(f"metric.{k}" for k in metric_names),
                     "wall", "attempts", "restarts", "error"])
    position = 0
    ranking = []
    for e, st in rows:
        ranked = metric_value(st, metric) is not None
        if ranked:
            position += 1
            ranking.append(e.id)
        metrics = (st.metrics or {}) if st else {}
        error = (st.error or "").strip().splitlines()[0] if st and st.error else ""
        writer.writerow([
            position if ranked else "", e.id, e.index, e.seed, st.status if st else "queued",
            *(_csv_cell(e.params.get(k)) for k in param_names),
            *(_csv_cell(metrics.get(k)) for k in metric_names),
            _csv_cell(st.wall if st else None), st.attempts if st else 0,
            st.restarts if st else 0, error,
        ])
    win = best(experiments, states, metric)
    summary = {
        "name": name,
        "metric": metric.to_dict() if metric else None,
        "total": len(experiments),
        "counts": _counts({e.id: st for e, st in rows if st is not None}, len(experiments)),
        "best": _summary_entry(*win) if win else None,
        "ranking": ranking,
        "experiments": [_summary_entry(e, st) for e, st in rows],
        "generated_at": time.time(),
    }
    directory = Path(directory)
    csv_path = atomic_write(directory / RESULTS_CSV, buf.getvalue())
    text = json.dumps(_strict_json(summary), indent=2, ensure_ascii=False, allow_nan=False)
    json_path = atomic_write(directory / SUMMARY_JSON, text + "\n")
    return csv_path, json_path


def plot(directory: str | os.PathLike, experiments: Sequence[Experiment],
         states: Mapping[str, ExperimentState], metric: Metric | None) -> Path | None:
    """Write ``metric.png`` (metric vs each varying numeric param) if matplotlib is there.

    Returns None without matplotlib (an optional extra: ``pip install yrmpi[plot]``), without
    a metric, or when no experiment has a metric value yet.
    """
    if metric is None:
        return None
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except Exception:
        return None
    points = [(e, v) for e, st in ((e, states.get(e.id)) for e in experiments)
              if (v := metric_value(st, metric)) is not None]
    if not points:
        return None
    varying, _ = split_params([e.params for e in experiments])
    numeric = [k for k in varying
               if all(isinstance(e.params.get(k), (int, float))
                      and not isinstance(e.params.get(k), bool) for e in experiments)][:6]
    win = best(experiments, states, metric)
    fig = Figure(figsize=(4.2 * max(len(numeric), 1), 3.6))
    FigureCanvasAgg(fig)
    if numeric:
        for i, k in enumerate(numeric, start=1):
            ax = fig.add_subplot(1, len(numeric), i)
            xs = [e.params[k] for e, _ in points]
            ax.scatter(xs, [v for _, v in points], s=18, alpha=0.7)
            if win:
                ax.scatter([win[0].params[k]], [metric_value(win[1], metric)], marker="*",
                           s=160, color="red", label="best")
            positive = [x for x in xs if x > 0]
            if len(positive) == len(xs) and max(xs) / min(xs) >= 100:
                ax.set_xscale("log")
            ax.set_xlabel(k)
            ax.set_ylabel(metric.name)
    else:
        ax = fig.add_subplot(1, 1, 1)
        ax.scatter([e.index for e, _ in points], [v for _, v in points], s=18)
        ax.set_xlabel("experiment index")
        ax.set_ylabel(metric.name)
    fig.suptitle(f"{metric.name} ({metric.mode}) of {len(points)} finished experiments")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return atomic_write(Path(directory) / PLOT_PNG, buf.getvalue())


def running_lines(states: Mapping[str, ExperimentState], metric: Metric | None, now: float) -> list[str]:
    """One line per running experiment: last step, last metrics, elapsed, ETA (from the mean wall
    time of the finished ones)."""
    walls = [s.wall for s in states.values() if s.status in DONE and s.wall is not None]
    mean = sum(walls) / len(walls) if walls else None
    out = []
    for st in sorted((s for s in states.values() if s.status == "running"),
                     key=lambda s: (s.index if s.index is not None else 1 << 62, s.id)):
        ran = now - st.started_at if st.started_at is not None else None
        last = st.last or {}
        shown = [f"{k}={fmt_value(v)}" for k, v in list(last.items())[:4]]
        if metric is not None and metric.name in last and metric.name not in list(last)[:4]:
            shown.insert(0, f"{metric.name}={fmt_value(last[metric.name])}")
        eta = "?" if mean is None or ran is None else f"~{fmt_duration(max(mean - ran, 0.0))}"
        step = f"step {fmt_value(st.step)}" if st.step is not None else "no report yet"
        out.append(f"running {st.id}: {step}{' ' + ' '.join(shown) if shown else ''} | elapsed "
                   f"{fmt_duration(ran)} | ETA {eta}")
    return [""] + out if out else []


def report(directory: str | os.PathLike) -> str:
    """The full text report of a sweep folder (its ``config.yaml`` + ``journal.jsonl``).

    Safe to call while the sweep runs: it only reads, and torn journal lines are skipped
    and mentioned.  Raises SweepConfigError if the folder has no readable config.yaml.
    """
    directory = Path(directory)
    source = str(directory / CONFIG_NAME)
    try:
        text = (directory / CONFIG_NAME).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise SweepConfigError(
            f"{source}: (file): found no readable file ({reason}), expected the config.yaml "
            "a sweep writes into its output folder") from None
    try:
        raw = yaml.safe_load(text)
    except Exception as e:
        raise SweepConfigError(f"{source}: (document): found invalid YAML "
                               f"({type(e).__name__}), expected the resolved config") from None
    config = load_dict(raw, source=source, check_entry=False, expand_vars=False)
    records, warnings = read_journal(directory)
    experiments = experiments_of(config, records)
    states = fold(records)
    known = {e.id for e in experiments}
    stale = [i for i in states if i not in known]
    states = {i: s for i, s in states.items() if i in known}
    total = max(config.total, len(experiments))
    c = _counts(states, total)
    what = f"metric {config.metric.name} ({config.metric.mode})" if config.metric else "no metric"
    stopped = f", {c['stopped']} stopped early" if c["stopped"] else ""
    lines = [
        f"sweep {config.name}: {total} experiments, {what}",
        f"{c['finished']} finished{stopped}, {c['running']} running, {c['queued']} queued, {c['failed']} failed",
        "",
        ranked_table(experiments, states, config.metric),
    ]
    lines += running_lines(states, config.metric, time.time())
    win = best(experiments, states, config.metric)
    if win is not None and config.metric is not None:
        e, st = win
        lines += ["", f"best: {e.id} seed={e.seed} {fmt_params(e.params)} -> "
                      f"{config.metric.name}={fmt_value(metric_value(st, config.metric))}"]
    if stale:
        warnings.append(f"{len(stale)} experiment(s) in the journal are not in config.yaml "
                        "(was the config changed?); they are left out")
    lines += [f"warning: {w}" for w in warnings]
    return "\n".join(lines)
