"""The one-line problem format and the collector every check reports into.

Every mistake is reported as ``FILE: KEY.PATH: found X, expected Y[; hint]``; these helpers
build such lines and collect all of a document's problems before one error is raised.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Sequence
from typing import Any

MISSING = object()  # a key that is not in the document (distinct from null)

_SIMPLE_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")


class SweepConfigError(ValueError):
    """A mistake in a sweep config: one line naming file, key path, found and expected.

    ``problems`` holds every problem found (one line each); the message is the first of them,
    plus a count of the others, so ``str(err)`` is still a single line.
    """

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems: tuple[str, ...] = tuple(problems) or (message,)


_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def one_line(text: str) -> str:
    """Escape line breaks and control characters: a problem is always one printable line."""
    return _CONTROL_RE.sub(lambda m: _ESCAPES.get(m.group(0), f"\\u{ord(m.group(0)):04x}"),
                           text)


def shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


class Index(int):
    """A list position in a key path (rendered ``[i]``, unlike an integer mapping key)."""


def path_text(path: Sequence[Any]) -> str:
    """``params.wd.loguniform``, ``params.lr[2]``; odd keys are JSON-quoted (one line)."""
    if not path:
        return "(document)"
    out = []
    for seg in path:
        if isinstance(seg, Index):
            out.append(f"[{int(seg)}]")
            continue
        text = seg if isinstance(seg, str) else str(seg)
        if not _SIMPLE_KEY_RE.match(text):
            text = json.dumps(text)
        out.append(("." if out else "") + text)
    return "".join(out)


_TYPE_NAMES = {bool: "boolean", int: "integer", float: "number", str: "string",
               list: "list", dict: "mapping", type(None): "null"}


def describe(value: Any) -> str:
    """``integer 3``, ``string "three"``, ``nothing (key is missing)`` for error messages."""
    if value is MISSING:
        return "nothing (key is missing)"
    if value is None:
        return "null"
    kind = _TYPE_NAMES.get(type(value), type(value).__name__)
    try:
        text = json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        try:
            text = repr(value)
        except (ValueError, RecursionError):  # an int of more than 4300 digits, a cycle
            text = f"<{kind} too large to print>"
    return f"{kind} {shorten(text)}"


def did_you_mean(word: Any, choices: Sequence[str], cutoff: float = 0.6) -> str | None:
    if not isinstance(word, str):
        return None
    hits = difflib.get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    if not hits:
        hits = [c for c in choices if c.lower() == word.lower()]
    return f"did you mean {hits[0]!r}?" if hits else None


class Problems:
    """Collects one-line problems; a path is reported once (no cascades of the same key)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: list[str] = []
        self._paths: set[tuple] = set()

    def add(self, path: Sequence[Any], found: str, expected: str, hint: str | None = None,
            ) -> None:
        key = tuple(repr(p) for p in path)
        if key in self._paths:
            return
        self._paths.add(key)
        line = f"{self.source}: {path_text(path)}: found {found}, expected {expected}"
        if hint:
            line += f"; {hint}"
        self.lines.append(one_line(line))

    def has(self, path: Sequence[Any]) -> bool:
        return tuple(repr(p) for p in path) in self._paths

    def raise_if_any(self) -> None:
        if not self.lines:
            return
        message = self.lines[0]
        if len(self.lines) > 1:
            more = len(self.lines) - 1
            message += f" (+{more} more problem{'s' if more > 1 else ''})"
        raise SweepConfigError(message, self.lines)
