"""The YAML loader of sweep files and ``--set`` values: ``yaml.SafeLoader`` read as YAML 1.2."""

from __future__ import annotations

import re
from typing import Any

import yaml

__all__ = ["safe_load"]


class _SweepLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and reads scalars as YAML 1.2 (core schema) does.

    PyYAML implements YAML 1.1, whose surprises cost runs: ``workers: 1:30`` is 90
    (sexagesimal), ``on``/``yes``/``no`` are booleans, ``0777`` is octal 511, ``1_000`` is 1000
    and ``1e-5`` is a string.  Here only ``true``/``false`` are booleans, integers are decimal,
    ``0o`` octal or ``0x`` hex, and floats follow 1.2 (``1e-5`` is a number); everything else
    stays a string, so validation names it.  A key given twice is an error (1.2 says keys are
    unique), not "the last one wins".
    """

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers
                if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:int",
                               "tag:yaml.org,2002:float")]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = self.construct_object(key_node, deep=False)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:
                    continue
                if first is not key_node:
                    raise yaml.constructor.ConstructorError(
                        "while reading a mapping", node.start_mark,
                        f"found the key {key_node.value!r} twice (first on line "
                        f"{first.start_mark.line + 1}); a key may appear once", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: Any) -> int:
        text = self.construct_scalar(node)
        if text[:2] in ("0o", "0x"):
            return int(text[2:], 8 if text[1] == "o" else 16)
        return int(text)

    def construct_yaml_float(self, node: Any) -> float:
        text = self.construct_scalar(node).lower()
        if text.lstrip("+-") in (".inf",):
            return float(text.replace(".inf", "inf"))
        if text == ".nan":
            return float("nan")
        return float(text)


_SweepLoader.add_implicit_resolver("tag:yaml.org,2002:bool",
                                   re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_SweepLoader.add_implicit_resolver("tag:yaml.org,2002:int",
                                   re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
                                   list("-+0123456789"))
_SweepLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
               r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+.0123456789"))
_SweepLoader.add_constructor("tag:yaml.org,2002:int", _SweepLoader.construct_yaml_int)
_SweepLoader.add_constructor("tag:yaml.org,2002:float", _SweepLoader.construct_yaml_float)


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` with the sweep's loader (a SafeLoader: no Python tags, nothing unpickled)."""
    return yaml.load(text, Loader=_SweepLoader)  # noqa: S506 - _SweepLoader is a SafeLoader subclass
