"""Where an ``entry`` string points: ``file.py:Name`` or ``package.module:Name``."""

from __future__ import annotations

import os
from pathlib import Path


def split_entry(entry: str) -> tuple[str, str, bool]:
    """(target, attribute path, well formed) of ``target:Name``."""
    target, sep, attr = entry.rpartition(":")
    ok = bool(sep and target and attr and all(p.isidentifier() for p in attr.split(".")))
    if ok and not is_file_target(target):
        ok = all(p.isidentifier() for p in target.split("."))
    return target, attr, ok


def is_file_target(target: str) -> bool:
    return target.endswith(".py") or "/" in target or os.sep in target


def find_entry_file(target: str, base_dir: str) -> Path | None:
    for candidate in entry_candidates(target, base_dir):
        try:
            if candidate.is_file():
                return candidate.resolve()
        except (OSError, ValueError):  # name too long, NUL byte: simply not a file
            continue
    return None


def entry_candidates(target: str, base_dir: str) -> list[Path]:
    p = Path(target)
    try:
        p = p.expanduser()
    except RuntimeError:  # "~user" that does not exist
        pass
    if p.is_absolute():
        return [p]
    candidates = [Path(base_dir, p)]
    try:
        cwd = Path.cwd() / p
    except OSError:  # the current directory was deleted
        return candidates
    if cwd.absolute() != candidates[0].absolute():
        candidates.append(cwd)
    return candidates

