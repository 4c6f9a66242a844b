"""Checks of the whole document except ``params``; builds the :class:`SweepConfig`."""

from __future__ import annotations

import copy
import math
import os
import re
from typing import Any

from .errors import MISSING, Problems, describe, did_you_mean
from .targets import split_entry
from .trials import validate_scheduler, validate_search
from .types import (
    DEFAULT_CPU,
    DEFAULT_MEMORY,
    MAX_EXPERIMENTS,
    MAX_NAME,
    MAX_PATH,
    MAX_WORKERS,
    METRIC_KEYS,
    METRIC_MODES,
    REQUIRED_KEYS,
    RESOURCE_ROLES,
    TOP_KEYS,
    Distribution,
    Grid,
    Metric,
    Resources,
    SweepConfig,
)
from .validate_params import validate_params
from .values import is_int, is_number

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class _ScalarChecks:
    """Validation helpers bound to one document and its problem list."""

    def __init__(self, doc: dict, problems: Problems) -> None:
        self.doc = doc
        self.p = problems

    def int_(self, key: str, default: Any, minimum: int, nullable: bool = False) -> Any:
        v = self.doc.get(key, default)
        if v is None and nullable:
            return None
        if not is_int(v) or v < minimum:
            what = f"an integer >= {minimum}" + (" or null" if nullable else "")
            self.p.add((key,), describe(self.doc.get(key, MISSING)), what)
            return default if default is not MISSING else minimum
        return v

    def number(self, key: str, default: Any, minimum: float, strict: bool,
               nullable: bool = False) -> Any:
        v = self.doc.get(key, default)
        if v is None and nullable:
            return None
        if not is_number(v) or (v <= minimum if strict else v < minimum):
            op = ">" if strict else ">="
            what = f"a number of seconds {op} {minimum:g}" + (" or null" if nullable else "")
            self.p.add((key,), describe(self.doc.get(key, MISSING)), what)
            return default
        return v


def validate_document(doc: dict, source: str, base_dir: str, p: Problems) -> SweepConfig | None:
    for key in doc:
        if key not in TOP_KEYS:
            p.add((key,), f"unknown key {key!r}" if isinstance(key, str) else
                  f"unknown key {describe(key)}", "one of " + ", ".join(TOP_KEYS),
                  did_you_mean(key, TOP_KEYS))
    for key in REQUIRED_KEYS:
        if key not in doc:
            p.add((key,), describe(MISSING), {
                "name": "a sweep name like lr-sweep",
                "entry": "'path/to/file.py:ClassName' or 'package.module:ClassName'",
                "run": "the name of the method that runs one experiment",
                "params": "a mapping of param name -> list, distribution or constant",
            }[key])
    v = _ScalarChecks(doc, p)

    name = doc.get("name", MISSING)
    if name is not MISSING and not (isinstance(name, str) and _NAME_RE.match(name)):
        p.add(("name",), describe(name),
              "a non-empty string of letters, digits, '.', '_', '-' (it names a folder)")
    entry = doc.get("entry", MISSING)
    if entry is not MISSING and not (isinstance(entry, str) and split_entry(entry)[2]):
        p.add(("entry",), describe(entry),
              "'path/to/file.py:ClassName' or 'package.module:ClassName'")
    run = doc.get("run", MISSING)
    if run is not MISSING and not (isinstance(run, str) and run.isidentifier()):
        p.add(("run",), describe(run), "a method name like train")

    init = doc.get("init", {})
    if init is None:
        init = {}
    if not isinstance(init, dict):
        p.add(("init",), describe(init), "a mapping of constructor keyword arguments")
        init = {}
    for k in init:
        if not (isinstance(k, str) and k.isidentifier()):
            p.add(("init", k), f"key {describe(k)}", "keyword argument names (identifiers)")

    workers = v.int_("workers", 0, 0)
    if workers > MAX_WORKERS:
        p.add(("workers",), describe(workers),
              f"an integer from 0 to {MAX_WORKERS} (1 supervisor + {workers} workers = {workers + 1} "
              f"instances per experiment, each needing room on a rank; at most {MAX_WORKERS + 1})")
        workers = 0
    sup_res, wrk_res = _validate_resources(doc.get("resources", MISSING), p)
    params = validate_params(doc.get("params", MISSING), p)
    samples = v.int_("samples", 1, 1)
    if (params is not None and samples > 1
            and not any(isinstance(x, Distribution) for x in params.values())):
        p.add(("samples",), describe(samples),
              "1 when params has no distribution to sample (loguniform, uniform, randint, choice)")
    seeds = _validate_seeds(doc.get("seeds", [0]), p)
    retries = v.int_("retries", 0, 0)
    metric = _validate_metric(doc.get("metric"), p)
    output = doc.get("output", MISSING)
    if output is MISSING or output is None:
        output = f"results/{name}" if isinstance(name, str) else "results"
    elif not (isinstance(output, str) and output.strip()):
        p.add(("output",), describe(output), "a folder path")
    if isinstance(output, str):
        _check_path(output, p)
    max_concurrent = v.int_("max_concurrent", None, 1, nullable=True)
    grace_period = v.number("grace_period", 30, 0, strict=False)
    status_interval = v.number("status_interval", 10, 0, strict=True)
    timeout = v.number("timeout", None, 0, strict=True, nullable=True)
    scheduler = validate_scheduler(doc.get("scheduler"), metric, p)
    search = validate_search(doc.get("search"), metric, p)
    if search is not None and samples != 1:
        p.add(("samples",), describe(samples), "1 with a search (the search draws the params)")

    if params is not None and seeds is not None:
        grid = math.prod(len(x.values) for x in params.values() if isinstance(x, Grid))
        total = grid * samples * len(seeds)
        if total > MAX_EXPERIMENTS:
            p.add(("params",), f"{grid} grid points x {samples} samples x {len(seeds)} seeds "
                  f"= {total} experiments", f"at most {MAX_EXPERIMENTS}")
    if p.lines:
        return None
    return SweepConfig(
        name=name, entry=entry, run=run, params=params or {}, init=copy.deepcopy(init),
        workers=workers, supervisor_resources=sup_res, worker_resources=wrk_res,
        samples=samples, seeds=tuple(seeds or (0,)), retries=retries, metric=metric,
        output=output, max_concurrent=max_concurrent, grace_period=grace_period,
        status_interval=status_interval, timeout=timeout, scheduler=scheduler, search=search,
        source=source, base_dir=base_dir,
    )


def _check_path(output: str, p: Problems) -> None:
    """Paths no filesystem call accepts fail here, with the limit, not as a traceback later."""
    if "\0" in output:
        p.add(("output",), f"a path with a NUL byte ({describe(output)})", "a folder path without NUL bytes")
        return
    try:
        raw = os.fsencode(output)
    except UnicodeError:
        p.add(("output",), describe(output), "a folder path the filesystem can encode")
        return
    longest = max(raw.split(b"/"), key=len)
    if len(raw) >= MAX_PATH:
        p.add(("output",), f"a path of {len(raw)} bytes", f"a folder path shorter than {MAX_PATH} bytes")
    elif len(longest) > MAX_NAME:
        p.add(("output",), f"a path with a {len(longest)}-byte component "
              f"({describe(os.fsdecode(longest))})", f"components of at most {MAX_NAME} bytes")


def _validate_resources(raw: Any, p: Problems) -> tuple[Resources, Resources]:
    out = {role: Resources() for role in RESOURCE_ROLES}
    if raw is MISSING or raw is None:
        return out["supervisor"], out["worker"]
    if not isinstance(raw, dict):
        p.add(("resources",), describe(raw), "a mapping with supervisor: and worker:")
        return out["supervisor"], out["worker"]
    for role, spec in raw.items():
        if role not in RESOURCE_ROLES:
            p.add(("resources", role), f"unknown key {role!r}" if isinstance(role, str)
                  else f"unknown key {describe(role)}", "supervisor or worker",
                  did_you_mean(role, RESOURCE_ROLES))
            continue
        if spec is None:
            continue
        if not isinstance(spec, dict):
            p.add(("resources", role), describe(spec),
                  "a mapping like {cpu: 1000, memory: 2000, gpu: 1}")
            continue
        cpu, memory, custom = DEFAULT_CPU, DEFAULT_MEMORY, {}
        for k, amount in spec.items():
            path = ("resources", role, k)
            if not isinstance(k, str) or not k:
                p.add(path, f"key {describe(k)}", "cpu, memory or a custom resource name")
            elif k in ("cpu", "memory"):
                if not is_int(amount) or amount < 0:
                    unit = "millicores (1000 = one core)" if k == "cpu" else "MB"
                    p.add(path, describe(amount), f"an integer >= 0 in {unit}")
                elif k == "cpu":
                    cpu = amount
                else:
                    memory = amount
            elif did_you_mean(k, ("cpu", "memory"), cutoff=0.8):  # "cpuu", "Memory"
                p.add(path, f"unknown key {k!r}", "cpu, memory or a custom resource name",
                      did_you_mean(k, ("cpu", "memory"), cutoff=0.8))
            elif not is_number(amount) or amount < 0:
                p.add(path, describe(amount), "a number >= 0 (custom resource amount)")
            else:
                custom[k] = amount
        out[role] = Resources(cpu=cpu, memory=memory, custom=custom)
    return out["supervisor"], out["worker"]



def _validate_seeds(raw: Any, p: Problems) -> list[int] | None:
    if (not isinstance(raw, list) or not raw or not all(is_int(s) for s in raw)
            or len(set(raw)) != len(raw)):
        p.add(("seeds",), describe(raw), "a non-empty list of distinct integers like [0, 1]")
        return None
    return raw


def _validate_metric(raw: Any, p: Problems) -> Metric | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        p.add(("metric",), describe(raw), "a mapping like {name: loss, mode: min}")
        return None
    for k in raw:
        if k not in METRIC_KEYS:
            p.add(("metric", k), f"unknown key {k!r}" if isinstance(k, str)
                  else f"unknown key {describe(k)}", "name and mode", did_you_mean(k, METRIC_KEYS))
    name = raw.get("name", MISSING)
    mode = raw.get("mode", MISSING)
    ok = True
    if not (isinstance(name, str) and name.strip()):
        p.add(("metric", "name"), describe(name), "the name of a metric the run returns, like loss")
        ok = False
    if mode not in METRIC_MODES:
        p.add(("metric", "mode"), describe(mode), "min or max",
              did_you_mean(mode, METRIC_MODES) if isinstance(mode, str) else None)
        ok = False
    return Metric(name, mode) if ok and len(raw) == 2 else None
