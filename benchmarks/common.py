"""Shared pieces of the benchmarks: launching jobs, statistics, rows, process memory.

Every benchmark module has `run(quick, with_ray) -> dict` (rows plus details) and a `main()`
so it runs alone (`python -m benchmarks.calls`). Measurements that need MPI ranks or Ray run
in child processes started here; the orchestrating process only waits on them (blocking
waits, no polling), so it costs the measured processes nothing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO / "benchmarks"
PYTHON = sys.executable
JOB_TIMEOUT_S = 300


class BenchError(RuntimeError):
    """A benchmark's child process failed; the message carries the tail of its output."""


# -- environment --------------------------------------------------------------------------------
def ray_available() -> bool:
    return importlib.util.find_spec("ray") is not None


def ray_version() -> str | None:
    if not ray_available():
        return None
    try:
        from importlib.metadata import version

        return version("ray")
    except Exception:
        return "unknown"


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every child: the repo importable (jobs say `from benchmarks import ...`),
    Open MPI allowed to run as root, and no stray yrmpi settings from the caller's shell."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    env.setdefault("PMIX_MCA_psec", "native")
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env["PYTHONUNBUFFERED"] = "1"
    for name in ("YRMPI_NUM_RANKS", "YRMPI_CPU_PER_RANK", "YRMPI_MEMORY_PER_RANK", "YRMPI_PLACEMENT"):
        env.pop(name, None)
    env.update(extra or {})
    return env


def yrmpi_run(n: int, script: Path | str, args: Sequence[str] = ()) -> list[str]:
    """`python -m yrmpi run -n N script args`: the launch line users type."""
    return [PYTHON, "-m", "yrmpi", "run", "-n", str(n), str(script), *args]


def module_cmd(module: str, args: Sequence[str] = ()) -> list[str]:
    return [PYTHON, "-m", module, *args]


def run_child(cmd: list[str], timeout: float = JOB_TIMEOUT_S, env: dict[str, str] | None = None) -> tuple[str, float]:
    """Run a child to completion; (stdout, wall seconds). BenchError on a non-zero exit or a
    timeout (with the stacks of the hung processes)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env or child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        tree = _descendants(proc.pid)
        stacks = _stacks(tree)  # where it hangs, before the evidence is killed
        for pid in [*tree, proc.pid]:
            _kill(pid)
        try:
            stdout, stderr = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:  # a process outside the tree holds the pipes
            stdout, stderr = "", ""
        output = _tail(stdout) + _tail(stderr) + stacks
        raise BenchError(f"timed out after {timeout} s: {' '.join(cmd)}\n{output}") from None
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise BenchError(f"exit code {proc.returncode}: {' '.join(cmd)}\n{_tail(stdout)}{_tail(stderr)}")
    return stdout, wall


def _descendants(root: int) -> list[int]:
    """Every process below `root` (mpiexec and its ranks), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _stacks(pids: list[int]) -> str:
    """The Python stacks of the processes of a hung job, where py-spy is installed."""
    spy = shutil.which("py-spy")
    if spy is None:
        return "(install py-spy to see the stacks of a hung job here)\n"
    dumps = []
    for pid in pids:
        try:
            out = subprocess.run([spy, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=60).stdout
        except subprocess.TimeoutExpired:
            out = "Python process: py-spy timed out"
        if "Python" in out:
            dumps.append(f"--- pid {pid}\n{out}")
    return "".join(dumps)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _tail(text: str | bytes | None, lines: int = 25) -> str:
    if not text:
        return ""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:]) + "\n"


def run_json_job(cmd_for: Callable[[str], list[str]], timeout: float = JOB_TIMEOUT_S,
                 env: dict[str, str] | None = None) -> tuple[dict, float]:
    """Run a child that writes its measurements as JSON to the path it is given."""
    fd, path = tempfile.mkstemp(prefix="yrmpi-bench-", suffix=".json")
    os.close(fd)
    try:
        _, wall = run_child(cmd_for(path), timeout=timeout, env=env)
        with open(path) as fh:
            text = fh.read()
        if not text:
            raise BenchError(f"the job wrote no results: {' '.join(cmd_for(path))}")
        return json.loads(text), wall
    finally:
        os.unlink(path)


def write_json(path: str, data: Any) -> None:
    with open(path, "w") as fh:
        json.dump(data, fh)


def job_args(argv: Sequence[str] | None, jobs: Iterable[str]) -> argparse.Namespace:
    """Arguments shared by every benchmark module: orchestrate, or be one of its child jobs."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="few repetitions (a smoke test)")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray columns")
    parser.add_argument("--json", default=None, help="also write this module's results here")
    parser.add_argument("--job", choices=list(jobs), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--param", action="append", default=[], help=argparse.SUPPRESS)
    ns = parser.parse_args(argv)
    ns.params = dict(p.split("=", 1) for p in ns.param)
    return ns


# -- statistics and rows --------------------------------------------------------------------------
def summary(samples: Sequence[float]) -> dict[str, Any] | None:
    """Median and spread (min, max) of repeated measurements."""
    values = [float(v) for v in samples if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values),
            "samples": values}


def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value:.2f} s" if value >= 1 else f"{value * 1e3:.0f} ms"
    if unit == "us":
        return f"{value:,.1f} us" if value < 100 else f"{value:,.0f} us"
    if unit == "ms":
        return f"{value:,.1f} ms"
    if unit in ("/s", "calls/s", "instances/s"):
        return f"{value:,.0f}/s" if value >= 10 else f"{value:,.2f}/s"
    if unit == "MB/s":
        return f"{value:,.0f} MB/s"
    if unit == "MB":
        return f"{value:,.0f} MB"
    if unit == "%":
        return f"{value:.1f}%"
    return f"{value:,.3g} {unit}"


def fmt_stat(stat: dict | None, unit: str) -> str:
    if stat is None:
        return "-"
    text = fmt_value(stat["median"], unit)
    if stat["n"] > 1:
        text += f" ({fmt_value(stat['min'], unit)} .. {fmt_value(stat['max'], unit)}, n={stat['n']})"
    else:
        text += " (n=1)"
    return text


def row(key: str, label: str, unit: str, *, yrmpi: dict | None, raw: dict | None = None,
        ray: dict | None = None, raw_label: str = "", ray_label: str = "", ratio: float | None = None,
        ratio_text: str = "", target: str = "", met: bool | None = None, note: str = "") -> dict:
    """One line of the results table (and of results.json)."""
    return {"key": key, "benchmark": label, "unit": unit, "yrmpi": yrmpi, "raw": raw, "ray": ray,
            "raw_label": raw_label, "ray_label": ray_label, "ratio": ratio, "ratio_text": ratio_text,
            "target": target, "met": met, "note": note}


def med(stat: dict | None) -> float | None:
    return None if stat is None else stat["median"]


def ratio(a: dict | None, b: dict | None) -> float | None:
    """median(a) / median(b), or None when either side is missing."""
    if a is None or b is None or not b["median"]:
        return None
    return a["median"] / b["median"]


def paired(a: Sequence[float], b: Sequence[float]) -> dict[str, Any] | None:
    """Summary of a[i] / b[i] for measurements taken in alternating pairs (same round, same
    load): robust to the load drifting between rounds on a shared machine."""
    return summary([x / y for x, y in zip(a, b) if y])


def paired_text(stat: dict, what: str, fmt: str = "{:.1f}x") -> str:
    """'10.2x raw (pairs: 9.8x .. 11.0x)' from a `paired` summary."""
    text = f"{fmt.format(stat['median'])} {what}"
    if stat["n"] > 1:
        text += f" (pairs: {fmt.format(stat['min'])} .. {fmt.format(stat['max'])})"
    return text


def markdown_table(rows: Sequence[dict]) -> str:
    lines = ["| benchmark | yrmpi | raw mpi4py | Ray | ratio | target | met |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        unit = r["unit"]
        raw = fmt_stat(r["raw"], unit) if r["raw"] else (r["raw_label"] or "n/a")
        if r["raw"] and r["raw_label"]:
            raw = f"{r['raw_label']}: {raw}"
        ray = fmt_stat(r["ray"], unit) if r["ray"] else (r["ray_label"] or "n/a")
        if r["ray"] and r["ray_label"]:
            ray = f"{r['ray_label']}: {ray}"
        met = {True: "yes", False: "**no**", None: "-"}[r["met"]]
        lines.append(f"| {r['benchmark']} | {fmt_stat(r['yrmpi'], unit)} | {raw} | {ray} | {r['ratio_text'] or '-'} "
                     f"| {r['target'] or '-'} | {met} |")
    return "\n".join(lines)


def notes_of(rows: Sequence[dict]) -> list[str]:
    return [f"- {r['benchmark']}: {r['note']}" for r in rows if r.get("note")]


def finish(result: dict, ns: argparse.Namespace) -> int:
    """A module run alone: print its rows, write --json if asked."""
    print(markdown_table(result["rows"]))
    for line in notes_of(result["rows"]):
        print(line)
    if ns.json:
        with open(ns.json, "w") as fh:
            json.dump(result, fh, indent=1)
    return 0


# -- memory of a process tree -------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        return []


def process_tree(root: int) -> list[int]:
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(_children(pid))
    return out


def memory_of(pid: int) -> dict[str, Any] | None:
    """RSS and PSS (MB) of one process, with its short command line; None if it is gone."""
    try:
        rss = pss = None
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1]) / 1024
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1]) / 1024
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmd = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return None
    if rss is None:
        return None
    return {"pid": pid, "rss_mb": rss, "pss_mb": pss or 0.0, "cmd": cmd[:120]}


def tree_memory(root: int) -> dict[str, Any]:
    procs = [m for m in (memory_of(p) for p in process_tree(root)) if m is not None]
    return {"processes": len(procs), "rss_mb": sum(p["rss_mb"] for p in procs),
            "pss_mb": sum(p["pss_mb"] for p in procs), "detail": procs}


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User + system CPU seconds consumed so far by each of these processes that is alive."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rpartition(")")[2].split()
            out[pid] = (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return out


def cpu_used(before: dict[int, float], root: int) -> dict[int, float]:
    """CPU seconds each process under `root` used since `before` (all of it for new processes)."""
    now = cpu_seconds(process_tree(root))
    return {pid: t - before.get(pid, 0.0) for pid, t in now.items()}


def load_average() -> float:
    return os.getloadavg()[0]
