"""Plain-text formatting shared by the plan and the report (readable in a Slurm log)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def fmt_value(value: Any) -> str:
    """Short, unambiguous rendering of a param or metric value for a table cell."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.6g}"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return repr(value)


def fmt_duration(seconds: float | None) -> str:
    """``45s``, ``12m03s``, ``2h05m``, ``1d03h``: compact and sortable by eye."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = max(int(round(seconds)), 0)
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h{m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces; the last column is not padded."""
    rows = [list(r) for r in rows]
    widths = [len(h) for h in header]
    for r in rows:
        for i, cell in enumerate(r):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for r in [list(header), *rows]:
        cells = [c.ljust(widths[i]) for i, c in enumerate(r[:-1])] + [r[-1]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def split_params(params_list: Sequence[Mapping[str, Any]]) -> tuple[list[str], dict[str, Any]]:
    """(names of params that vary across experiments, {name: value} of those that do not).

    Tables show varying params as columns and constants once, so 24 rows of ``epochs=5``
    do not bury what actually changed.  With a single experiment every param is shown.
    """
    names: list[str] = []
    for p in params_list:
        for k in p:
            if k not in names:
                names.append(k)
    if len(params_list) <= 1:
        return names, {}
    varying, constant = [], {}
    for k in names:
        seen = {_key(p.get(k, "<missing>")) for p in params_list}
        if len(seen) > 1:
            varying.append(k)
        else:
            constant[k] = params_list[0].get(k)
    return varying, constant


def fmt_params(params: Mapping[str, Any]) -> str:
    """``lr=0.01 batch=32`` for one-line summaries."""
    return " ".join(f"{k}={fmt_value(v)}" for k, v in params.items())
