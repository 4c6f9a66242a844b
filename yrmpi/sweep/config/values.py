"""Which values a param may hold, and their canonical JSON (for ids and duplicate checks)."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

from .errors import describe


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """A finite int or float (not bool); huge ints that no float can hold are rejected."""
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return abs(v) <= sys.float_info.max
    return isinstance(v, float) and math.isfinite(v)


def json_problem(value: Any) -> str | None:
    """Why ``value`` cannot go into an experiment id / the journal, or None if it can."""
    if value is None or isinstance(value, (str, bool, int)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value} (not a finite number)"
    if isinstance(value, list):
        for v in value:
            bad = json_problem(v)
            if bad:
                return bad
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                return f"mapping key {describe(k)} (keys must be strings)"
            bad = json_problem(v)
            if bad:
                return bad
        return None
    return f"{type(value).__name__} {value!s} (quote it to pass a string)"


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

