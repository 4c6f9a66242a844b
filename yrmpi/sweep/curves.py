"""Learning curves: ``curves.csv`` (one row per ``trial.report``) and ``curves.png``.

Both are derived from the journal, never a second source of truth: they are rewritten whole
(atomically) from the journal's ``report`` lines, so a kill between a journal line and a
file write loses nothing, and a resumed experiment's rows carry their attempt.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ._fs import atomic_write
from .config import Experiment, Metric
from .report import _csv_cell

__all__ = ["CURVES_CSV", "CURVES_PNG", "curve_rows", "plot_curves", "write_curves"]

CURVES_CSV = "curves.csv"
CURVES_PNG = "curves.png"


def curve_rows(records: Iterable[Mapping[str, Any]], known: set[str] | None = None) -> list[dict]:
    """The ``report`` records in journal order (those of experiments in ``known``)."""
    return [dict(r) for r in records
            if r.get("event") == "report" and isinstance(r.get("metrics"), dict)
            and (known is None or r.get("exp") in known)]


def write_curves(directory: str | os.PathLike, records: Iterable[Mapping[str, Any]],
                 experiments: Sequence[Experiment]) -> Path | None:
    """Write ``curves.csv``: exp, index, attempt, step, ts, decision, ``metric.<name>``...; None
    when nothing reported yet."""
    index = {e.id: e.index for e in experiments}
    rows = curve_rows(records, set(index))
    if not rows:
        return None
    names: list[str] = []
    for r in rows:
        names += [k for k in r["metrics"] if k not in names]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["exp", "index", "attempt", "step", "ts", "decision", *(f"metric.{k}" for k in names)])
    for r in rows:
        writer.writerow([r["exp"], index.get(r["exp"], ""), _csv_cell(r.get("attempt")), _csv_cell(r.get("step")),
                         _csv_cell(r.get("ts")), r.get("decision", ""),
                         *(_csv_cell(r["metrics"].get(k)) for k in names)])
    return atomic_write(Path(directory) / CURVES_CSV, buf.getvalue())


def plot_curves(directory: str | os.PathLike, records: Iterable[Mapping[str, Any]],
                experiments: Sequence[Experiment], metric: Metric | None) -> Path | None:
    """``curves.png``: the metric against the step, one line per experiment (needs matplotlib,
    the ``plot`` extra); None without it, without a metric or without reports."""
    if metric is None:
        return None
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except Exception:
        return None
    known = {e.id for e in experiments}
    lines: dict[str, dict[float, float]] = {}
    for n, r in enumerate(curve_rows(records, known)):
        value = r["metrics"].get(metric.name)
        step = r.get("step")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            lines.setdefault(r["exp"], {})[step if isinstance(step, (int, float)) else n] = float(value)
    if not lines:
        return None
    fig = Figure(figsize=(6.4, 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for exp, points in lines.items():
        xs = sorted(points)
        ax.plot(xs, [points[x] for x in xs], linewidth=1, alpha=0.8, label=exp if len(lines) <= 10 else None)
    ax.set_xlabel("step")
    ax.set_ylabel(metric.name)
    if len(lines) <= 10:
        ax.legend(fontsize=6)
    fig.suptitle(f"{metric.name} ({metric.mode}) of {len(lines)} experiments")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return atomic_write(Path(directory) / CURVES_PNG, buf.getvalue())
