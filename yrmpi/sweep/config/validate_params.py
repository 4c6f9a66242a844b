"""The ``params`` section: grid axes, distributions and constants."""

from __future__ import annotations

import copy
import math
from typing import Any

from .errors import MISSING, Index, Problems, describe, did_you_mean
from .types import DISTRIBUTIONS, Constant, Distribution, Grid, Param
from .values import canonical_json, is_int, is_number, json_problem


def validate_params(raw: Any, p: Problems) -> dict | None:
    if raw is MISSING:
        return None
    if not isinstance(raw, dict) or not raw:
        p.add(("params",), describe(raw),
              "a non-empty mapping of param name -> list, distribution or constant")
        return None
    out: dict[str, Param] = {}
    ok = True
    for name, value in raw.items():
        path = ("params", name)
        if not (isinstance(name, str) and name.isidentifier()):
            p.add(path, f"param name {describe(name)}",
                  "a keyword argument name (letters, digits, _; not starting with a digit)")
            ok = False
            continue
        param = _validate_param(value, path, p)
        if param is None:
            ok = False
        else:
            out[name] = param
    return out if ok else None


def _validate_param(value: Any, path: tuple, p: Problems) -> Param | None:
    if isinstance(value, list):
        if not value:
            p.add(path, "an empty list", "at least one value (a list is a grid axis)")
            return None
        seen: set[str] = set()
        for i, item in enumerate(value):
            bad = json_problem(item)
            if bad:
                p.add((*path, Index(i)), bad, "a string, number, boolean, null, list or mapping")
                return None
            key = canonical_json(item)
            if key in seen:
                p.add((*path, Index(i)), f"duplicate value {describe(item)}",
                      "distinct values on a grid axis")
                return None
            seen.add(key)
        return Grid(tuple(copy.deepcopy(value)))
    if isinstance(value, dict):
        return _validate_distribution(value, path, p)
    bad = json_problem(value)
    if bad:
        p.add(path, bad, "a string, number, boolean or null constant")
        return None
    return Constant(value)


def _validate_distribution(value: dict, path: tuple, p: Problems) -> Distribution | None:
    shape = "a distribution like {loguniform: [1e-5, 1e-2]} (one of " + ", ".join(
        DISTRIBUTIONS) + "); wrap a constant mapping in a one-element list"
    if len(value) != 1:
        keys = ", ".join(str(k) for k in value) or "none"
        p.add(path, f"a mapping with keys {keys}", shape)
        return None
    ((kind, args),) = value.items()
    if kind not in DISTRIBUTIONS:
        found = f"unknown distribution {kind!r}" if isinstance(kind, str) else \
            f"unknown distribution {describe(kind)}"
        p.add(path, found, "one of " + ", ".join(DISTRIBUTIONS), did_you_mean(kind, DISTRIBUTIONS))
        return None
    path = (*path, kind)
    if kind == "choice":
        if not isinstance(args, list) or not args:
            p.add(path, describe(args), "a non-empty list of options")
            return None
        for i, item in enumerate(args):
            bad = json_problem(item)
            if bad:
                p.add((*path, Index(i)), bad, "a string, number, boolean, null, list or mapping")
                return None
        return Distribution("choice", tuple(copy.deepcopy(args)))
    check = is_int if kind == "randint" else is_number
    kind_text = "integers" if kind == "randint" else "numbers"
    rule = "0 < lo < hi" if kind == "loguniform" else "lo < hi"
    expected = f"[lo, hi] with {kind_text} {rule}"
    if (not isinstance(args, list) or len(args) != 2 or not all(check(a) for a in args)):
        p.add(path, describe(args), expected)
        return None
    lo, hi = args
    if lo >= hi or (kind == "loguniform" and lo <= 0) or not math.isfinite(float(hi) - lo):
        p.add(path, describe(args), expected)
        return None
    return Distribution(kind, (lo, hi))
