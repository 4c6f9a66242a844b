"""The import layers of yrmpi: every import runs downward (docs/architecture.md, "Layers").

Every `import` statement counts, at module level, inside functions and under
`TYPE_CHECKING` alike: a function-level import against the order is still a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "yrmpi"

# Top to bottom. A module may import its own layer's package and any layer below it.
LAYERS = [
    ("yrmpi.__main__",),
    ("yrmpi.cli",),  # dispatches the subcommands
    ("yrmpi.slurm",),
    ("yrmpi.sweep",),
    ("yrmpi.ray",),  # Ray Core over the public API (import yrmpi.ray as ray)
    ("yrmpi",),  # the package's public face (yrmpi/__init__.py): what job code imports
    ("yrmpi.torch",),  # the optional PyTorch support (imported only by job code that wants it)
    ("yrmpi.api",),
    ("yrmpi.launch",),
    ("yrmpi.runtime",),
    ("yrmpi.collective",),
    ("yrmpi.roles", "yrmpi.scheduling"),  # siblings: neither imports the other
    ("yrmpi.transport",),
    ("yrmpi.core",),
]
# Modules of one layer that are independent roles: they never import each other.
INDEPENDENT = {
    "yrmpi.roles.caller", "yrmpi.roles.host", "yrmpi.roles.objects", "yrmpi.roles.output",
    "yrmpi.scheduling.scheduler", "yrmpi.scheduling.groups",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in the file, wherever it stands."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from . import x` imports the module x when x is a submodule, else an attribute
            submodules = [f"{target}.{alias.name}" for alias in node.names if _is_module(f"{target}.{alias.name}")]
            found += [(node.lineno, mod) for mod in submodules] or [(node.lineno, target)]
    return [(line, mod) for line, mod in found if mod == "yrmpi" or mod.startswith("yrmpi.")]


def _is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (ROOT.parent / rel).with_suffix(".py").is_file() or (ROOT.parent / rel / "__init__.py").is_file()


def _layer(module: str) -> int:
    best, index = -1, None
    for i, layer in enumerate(LAYERS):
        for prefix in layer:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, index = len(prefix), i
    assert index is not None, f"{module} belongs to no layer: add it to LAYERS"
    return index


def _group(module: str) -> str:
    """The layer package a module belongs to (yrmpi.roles, yrmpi.core, ...): the longest prefix."""
    prefixes = [p for layer in LAYERS for p in layer if module == p or module.startswith(p + ".")]
    return max(prefixes, key=len)


def _violations() -> list[str]:
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        me = _module_name(path)
        for line, target in _imports(path):
            where = f"{path.relative_to(ROOT.parent)}:{line}: {me} imports {target}"
            if _layer(target) < _layer(me):
                bad.append(f"{where} (a higher layer)")
            elif (_layer(target) == _layer(me) and _group(target) != _group(me)
                  and _group(me) != "yrmpi" and _group(target) != "yrmpi"):
                bad.append(f"{where} (a sibling layer)")
            elif me in INDEPENDENT and target in INDEPENDENT and target != me:
                bad.append(f"{where} (roles never import each other: let the runtime wire a callback)")
    return bad


def test_every_import_runs_downward() -> None:
    bad = _violations()
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


@pytest.mark.parametrize("code, expected", [
    ("from ..runtime import Runtime", "a higher layer"),
    ("from ..scheduling.placement import Placement", "a sibling layer"),
])
def test_the_check_catches_an_upward_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            code: str, expected: str) -> None:
    """The check itself can fail: a role importing the runtime (even inside a function) is found."""
    fake = ROOT / "roles" / "_layer_probe.py"
    fake.write_text(f"def f():\n    {code}\n")
    try:
        bad = _violations()
    finally:
        fake.unlink()
    assert any("_layer_probe" in b and expected in b for b in bad), bad
