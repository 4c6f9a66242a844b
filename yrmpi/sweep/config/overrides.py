"""``--set key.path=value``: command-line changes to the parsed document."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence

from .errors import MISSING, Problems, describe, did_you_mean
from .types import METRIC_KEYS, RESOURCE_ROLES, TOP_KEYS
from .yaml12 import safe_load


def _allowed_keys(prefix: tuple, node: dict) -> tuple[str, Sequence[str] | None]:
    """(what a key is called, the keys allowed) at ``prefix``; None allows any key."""
    if prefix == ():
        return "key", TOP_KEYS
    if prefix == ("metric",):
        return "key", METRIC_KEYS
    if prefix == ("resources",):
        return "key", RESOURCE_ROLES
    if prefix[0] == "params":  # only existing params: a typo must not add a new one
        return ("param" if len(prefix) == 1 else "key"), [k for k in node if isinstance(k, str)]
    return "key", None  # init.*, resources.<role>.*: free-form


def _may_create(prefix: tuple, seg: str) -> bool:
    """Whether a missing mapping may be created on the way to an overridden key."""
    return ((prefix == () and seg in ("init", "resources", "metric", "params"))
            or prefix == ("resources",) or prefix[:1] == ("init",))


def apply_overrides(raw: Mapping, overrides: Sequence[str], *,
                    source: str = "<dict>") -> dict:
    """Return a copy of ``raw`` with ``key.path=value`` items applied (for ``--set``).

    Values are parsed with ``yaml.safe_load`` (read as YAML 1.2) so ``workers=4`` is an int and
    ``params.lr=[0.1,0.2]`` a list.  Unknown keys are errors with a did-you-mean, so a typo
    in a long command line does not silently run the wrong sweep.  Top-level keys, metric
    and resources keys may be added; params must already exist in the file.
    """
    doc = copy.deepcopy(dict(raw))
    problems = Problems(source)
    for item in overrides:
        label = f"(from --set {item})"
        key, sep, text = str(item).partition("=")
        parts = tuple(key.strip().split("."))
        if not sep or any(not part for part in parts):
            problems.add(("--set",), json.dumps(str(item)), "key.path=value")
            continue
        try:
            value = safe_load(text)
        except Exception as e:
            problems.add(parts, f"a value that is not valid YAML ({type(e).__name__}) {label}",
                         "a YAML value like 4, 0.1, [1, 2] or text")
            continue
        node: dict = doc
        for depth, seg in enumerate(parts):
            prefix = parts[:depth]
            what, allowed = _allowed_keys(prefix, node)
            if allowed is not None and seg not in allowed:
                problems.add(parts[:depth + 1], f"unknown {what} {seg!r} {label}",
                             "one of " + (", ".join(allowed) or "(none)"),
                             did_you_mean(seg, allowed))
                break
            if depth == len(parts) - 1:
                node[seg] = value
                break
            child = node.get(seg)
            if child is None and _may_create(prefix, seg):
                child = node[seg] = {}
            if not isinstance(child, dict):
                problems.add(parts[:depth + 1], f"{describe(node.get(seg, MISSING))} {label}",
                             f"a mapping to set {parts[depth + 1]!r} inside")
                break
            node = child
    problems.raise_if_any()
    return doc
