"""Importing the entry class and checking that ``run`` is one of its methods."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from .errors import Problems, describe, did_you_mean, shorten
from .targets import entry_candidates, find_entry_file, is_file_target, split_entry

_LOADED_FILES: dict[str, tuple[int, int]] = {}  # module name -> (mtime_ns, size) when loaded


def _module_name_for(path: Path) -> str:
    stem = re.sub(r"\W", "_", path.stem) or "entry"
    digest = hashlib.sha256(str(path).encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"_yrmpi_sweep_{stem}_{digest}"


def _load_file_module(path: Path) -> Any:
    """Import a .py file under a name derived from its path, registered in sys.modules.

    Registering matters: dataclasses and cloudpickle look classes up through
    ``sys.modules``.  The module is also marked for pickling *by value* so ranks that never
    imported the file can still rebuild the class.
    """
    name = _module_name_for(path)
    stat = path.stat()
    stamp = (stat.st_mtime_ns, stat.st_size)
    loaded = sys.modules.get(name)
    if loaded is not None and _LOADED_FILES.get(name) == stamp:
        return loaded  # validated once already: do not run the user's module code twice
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    previous = sys.modules.get(name)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        if previous is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = previous
        raise
    _LOADED_FILES[name] = stamp
    try:
        import cloudpickle

        cloudpickle.register_pickle_by_value(module)
    except Exception:  # cloudpickle missing or too old: by-reference pickling still works
        pass
    return module


def import_entry(entry: str, base_dir: str | os.PathLike = ".", *, source: str = "<dict>",
                 ) -> Any:
    """Import ``file.py:Name`` / ``pkg.mod:Name`` and return the object found there.

    The object may be a yr creator proxy (decorated class); the caller gets it unchanged.
    Failures raise SweepConfigError (the user's import error is named, not re-raised).
    """
    problems = Problems(source)
    obj = _import_entry(entry, os.fspath(base_dir), problems)
    problems.raise_if_any()
    return obj


def _import_entry(entry: str, base_dir: str, p: Problems) -> Any:
    target, attr, ok = split_entry(entry)
    if not ok:
        p.add(("entry",), describe(entry),
              "'path/to/file.py:ClassName' or 'package.module:ClassName'")
        return None
    where = target
    try:
        if is_file_target(target):
            path = find_entry_file(target, base_dir)
            if path is None:
                looked = ", ".join(str(c) for c in entry_candidates(target, base_dir))
                p.add(("entry",), f"{shorten(json.dumps(entry))} but there is no such file "
                      f"(looked at {looked})", "a path relative to the YAML file's folder "
                      "or to the current directory")
                return None
            where = str(path)
            module = _load_file_module(path)
        else:
            module = importlib.import_module(target)
    except (Exception, SystemExit) as e:
        p.add(("entry",), f"{shorten(json.dumps(entry))} whose import failed with "
              f"{type(e).__name__}: {e}", "a module that imports cleanly")
        return None
    obj: Any = module
    for i, part in enumerate(attr.split(".")):
        try:
            obj = getattr(obj, part)
        except Exception:
            names = [n for n in dir(obj) if not n.startswith("_")]
            scope = where if i == 0 else ".".join(attr.split(".")[:i])
            p.add(("entry",), f"no {part!r} in {scope}", "a class defined there",
                  did_you_mean(part, names))
            return None
    return obj


def check_entry_class(entry: str, run: str, base_dir: str, p: Problems, init: Any = None) -> None:
    """Import the entry, check that ``run`` is a method of its class and that the constructor
    takes the ``init`` keywords (a typo there would fail every experiment on its rank)."""
    obj = _import_entry(entry, base_dir, p)
    if obj is None:
        return
    cls = getattr(obj, "__wrapped__", obj)  # a yr creator proxy wraps the user's class
    if not inspect.isclass(cls):
        p.add(("entry",), f"{type(cls).__name__} {entry!r}",
              "a class (plain or decorated with @yr.instance)")
        return
    method = getattr(cls, run, None)
    if method is None or not callable(method) or inspect.isclass(method):
        names = [n for n in dir(cls) if not n.startswith("_") and callable(getattr(cls, n, None))]
        found = f"no method {run!r} on {cls.__name__}" if method is None else \
            f"{type(method).__name__} attribute {run!r} on {cls.__name__}"
        p.add(("run",), found, "a method of the entry class", did_you_mean(run, names))
    if isinstance(init, dict):
        _check_init(cls, init, p)


def _check_init(cls: type, init: dict, p: Problems) -> None:
    try:
        sig = inspect.signature(cls)
    except (TypeError, ValueError):  # a builtin or C class: nothing to check against
        return
    params = sig.parameters.values()
    if any(q.kind is q.VAR_KEYWORD for q in params):
        return
    accepted = [q.name for q in params if q.kind in (q.POSITIONAL_OR_KEYWORD, q.KEYWORD_ONLY)]
    for key in init:
        if isinstance(key, str) and key not in accepted:
            p.add(("init", key), f"keyword argument {key!r}, which {cls.__name__}() does not take",
                  "one of " + (", ".join(accepted) or "(none: the constructor takes no arguments)"),
                  did_you_mean(key, accepted))
    missing = [q.name for q in params if q.default is q.empty
               and q.kind in (q.POSITIONAL_OR_KEYWORD, q.KEYWORD_ONLY) and q.name not in init]
    if missing:
        p.add(("init",), f"no value for {', '.join(missing)}, which {cls.__name__}() requires",
              "every required constructor argument under init")
