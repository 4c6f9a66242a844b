"""Reading a sweep: YAML (``yaml.safe_load`` only), size limits, then overrides, env, checks."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from .entry import check_entry_class
from .env import expand_env_tree
from .errors import Problems, SweepConfigError, describe, one_line, shorten
from .overrides import apply_overrides
from .types import REQUIRED_KEYS, SweepConfig
from .validation import validate_document
from .yaml12 import safe_load

_MAX_NODES = 200_000  # YAML aliases can make a small file expand into a huge tree
_MAX_DEPTH = 64
_MAX_TEXT = 4 << 20  # characters of one sweep file


def parse_yaml(text: str, source: str = "<string>") -> Any:
    """``yaml.safe_load`` with every failure turned into a one-line SweepConfigError."""
    if len(text) > _MAX_TEXT:
        raise SweepConfigError(one_line(
            f"{source}: (document): found {len(text)} characters, expected a sweep file of at most "
            f"{_MAX_TEXT}"))
    try:
        return safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1} column {mark.column + 1}" if mark else "(document)"
        what = " ".join(str(x) for x in (e.context, e.problem) if x) or "a syntax error"
        raise SweepConfigError(one_line(
            f"{source}: {where}: found invalid YAML ({what}), expected valid YAML syntax"
        )) from None
    except Exception as e:  # e.g. ValueError for a date like 2024-13-45, RecursionError
        raise SweepConfigError(one_line(
            f"{source}: (document): found YAML that cannot be read ({type(e).__name__}: {e}), "
            "expected plain YAML values (quote dates and odd strings)"
        )) from None


def load(path: str | os.PathLike, overrides: Sequence[str] = (), *,
         env: Mapping[str, str] | None = None, check_entry: bool = True) -> SweepConfig:
    """Read, override, expand, validate a sweep YAML file; raise SweepConfigError on mistakes.

    ``check_entry=False`` skips importing the entry (for reports on another machine).
    """
    source = os.fspath(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise SweepConfigError(one_line(
            f"{source}: (file): found no readable file ({reason}), expected a sweep YAML file"
        )) from None
    raw = parse_yaml(text, source)
    return load_dict(raw, source=source, base_dir=Path(source).parent, overrides=overrides,
                     env=env, check_entry=check_entry)


def load_dict(raw: Any, *, source: str = "<dict>", base_dir: str | os.PathLike | None = None,
              overrides: Sequence[str] = (), env: Mapping[str, str] | None = None,
              check_entry: bool = True, expand_vars: bool = True) -> SweepConfig:
    """Validate an already parsed document (same rules and errors as :func:`load`).

    ``expand_vars=False`` is for re-reading a resolved ``config.yaml``, whose ``$`` are final.
    """
    base = os.fspath(base_dir) if base_dir is not None else os.getcwd()
    _check_tree(raw, source)
    if raw is None:
        raise SweepConfigError(
            f"{source}: (document): found an empty document, expected a mapping with keys "
            + ", ".join(REQUIRED_KEYS))
    if not isinstance(raw, dict):
        raise SweepConfigError(one_line(
            f"{source}: (document): found {describe(raw)}, expected a mapping with keys "
            + ", ".join(REQUIRED_KEYS)))
    doc = apply_overrides(raw, overrides, source=source) if overrides else raw
    problems = Problems(source)
    if expand_vars:
        doc = expand_env_tree(doc, os.environ if env is None else env, (), problems)
    config = validate_document(doc, source, base, problems)
    entry, run = doc.get("entry"), doc.get("run")
    if (check_entry and isinstance(entry, str) and isinstance(run, str)
            and not problems.has(("entry",)) and not problems.has(("run",))):
        check_entry_class(entry, run, base, problems, doc.get("init"))
    problems.raise_if_any()
    assert config is not None
    return config


def _check_tree(raw: Any, source: str) -> None:
    """Reject alias bombs and self-referencing YAML before anything walks the tree."""
    count = 0
    on_path: set[int] = set()

    def walk(node: Any, depth: int) -> None:
        nonlocal count
        count += 1
        if count > _MAX_NODES or depth > _MAX_DEPTH:
            raise SweepConfigError(
                f"{source}: (document): found a document with more than {_MAX_NODES} values "
                f"or {_MAX_DEPTH} levels of nesting, expected a small config")
        if isinstance(node, str):
            _check_text(node, source)
            return
        if not isinstance(node, (dict, list)):
            return
        if id(node) in on_path:
            raise SweepConfigError(
                f"{source}: (document): found a YAML alias that contains itself, "
                "expected a tree without cycles")
        on_path.add(id(node))
        if isinstance(node, dict):
            for key in node:
                if isinstance(key, str):
                    _check_text(key, source)
        for child in (node.values() if isinstance(node, dict) else node):
            walk(child, depth + 1)
        on_path.discard(id(node))

    walk(raw, 0)


def _check_text(text: str, source: str) -> None:
    """Refuse strings no file, journal or id can hold: lone surrogates (``"\\ud800"``)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise SweepConfigError(one_line(
            f"{source}: (document): found a string with a lone surrogate {text[e.start]!r} "
            f"({shorten(repr(text))}), expected text that UTF-8 can hold")) from None
