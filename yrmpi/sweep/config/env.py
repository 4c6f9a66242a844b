"""``${VAR}`` / ``${VAR:-default}`` expansion in string values (``$$`` is a literal ``$``)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any

from .errors import Index, Problems

_VAR_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{")
_WHOLE_VAR_RE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}$")
_INT_RE = re.compile(r"^[-+]?\d+$")
_FLOAT_RE = re.compile(r"^[-+]?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?$")


def expand_env(raw: Any, env: Mapping[str, str] | None = None, *,
               source: str = "<dict>") -> Any:
    """Return a copy of ``raw`` with ``${VAR}`` / ``${VAR:-default}`` expanded in strings.

    Lets one YAML serve several allocations (``output: ${SCRATCH}/sweeps``).
    """
    problems = Problems(source)
    out = expand_env_tree(raw, os.environ if env is None else env, (), problems)
    problems.raise_if_any()
    return out


def expand_env_tree(node: Any, env: Mapping[str, str], path: tuple, problems: Problems) -> Any:
    if isinstance(node, dict):
        return {k: expand_env_tree(v, env, (*path, k), problems) for k, v in node.items()}
    if isinstance(node, list):
        return [expand_env_tree(v, env, (*path, Index(i)), problems) for i, v in enumerate(node)]
    if not isinstance(node, str) or "$" not in node:
        return node

    def lookup(name: str, default: str | None) -> str | None:
        value = env.get(name)
        if value in (None, "") and default is not None:
            return default
        if value is None:
            problems.add(path, f"${{{name}}} but environment variable {name} is not set",
                         f"{name} set, or a default like ${{{name}:-value}}")
        return value

    whole = _WHOLE_VAR_RE.match(node)
    if whole:
        value = lookup(whole.group(1), whole.group(2))
        if value is None:
            return node
        text = value.strip()
        if _INT_RE.match(text) or _FLOAT_RE.match(text):
            try:
                return int(text) if _INT_RE.match(text) else float(text)
            except (ValueError, OverflowError):  # more digits than int() takes (4300)
                problems.add(path, f"a number of {len(text)} characters from ${{{whole.group(1)}}}",
                             "a number of at most 4300 digits")
                return node
        return value

    def sub(m: re.Match) -> str:
        text = m.group(0)
        if text == "$$":
            return "$"
        if m.group(1) is None:
            problems.add(path, f"a malformed variable reference in {json.dumps(node)}",
                         "${NAME} or ${NAME:-default} (write $$ for a literal $)")
            return text
        value = lookup(m.group(1), m.group(2))
        return text if value is None else value

    return _VAR_RE.sub(sub, node)
