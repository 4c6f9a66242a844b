"""The crash-safe results journal of a sweep: ``<output>/journal.jsonl``.

One JSON object per line, one line per state change of one experiment, appended and never
rewritten.  The journal is the single source of truth for ``--resume`` and for reports, so
every append is one ``write`` of the whole line, then flush and ``os.fsync``: after a crash
the file holds every completed append, plus at most one torn line at the end (the job was
killed mid-write).  Readers skip torn lines and say so instead of failing.

Line fields: ``ts`` (unix seconds), ``event``, ``exp`` (experiment id), and per event:

- ``queued``:      ``params``, ``seed``, ``index``
- ``started``:     ``attempt`` (optional), any extras such as ``rank``
- ``finished``:    ``metrics`` (dict), ``wall`` (seconds)
- ``failed``:      ``error`` (one line), ``traceback``, ``wall`` (optional)
- ``retried``:     ``attempt`` (the attempt about to start), optional ``reason``
- ``interrupted``: ``reason`` (e.g. "SIGTERM"), ``wall`` (optional)
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ._fs import atomic_write, fsync_dir
from .config import Experiment

__all__ = [
    "CONFIG_NAME",
    "EVENTS",
    "JOURNAL_NAME",
    "ExperimentState",
    "Journal",
    "fold",
    "read_journal",
    "resume_plan",
    "write_resolved_config",
]

JOURNAL_NAME = "journal.jsonl"
CONFIG_NAME = "config.yaml"
EVENTS = ("queued", "started", "finished", "failed", "retried", "interrupted")
# Status shown to users for the latest event: "retried" means "waiting to run again".
_STATUS = {"queued": "queued", "started": "running", "finished": "finished",
           "failed": "failed", "retried": "queued", "interrupted": "interrupted"}


def _json_default(value: Any) -> Any:
    """Make numpy scalars/arrays and other odd metric values JSON-serialisable."""
    for attr in ("item", "tolist"):
        fn = getattr(value, attr, None)
        if callable(fn):
            try:
                return fn()
            except Exception:
                pass
    return repr(value)


def _dumps(record: Mapping[str, Any]) -> str:
    return json.dumps(record, default=_json_default, ensure_ascii=False,
                      separators=(",", ":"))


class Journal:
    """Appends records to ``<directory>/journal.jsonl``; one instance per sweep driver."""

    def __init__(self, directory: str | os.PathLike,
                 clock: Callable[[], float] = time.time) -> None:
        self.directory = Path(directory)
        self.path = self.directory / JOURNAL_NAME
        self._clock = clock
        self._ready = False

    def _prepare(self) -> None:
        """Create the file, and end a torn last line so the next append starts clean.

        Without this, the first append after a crash would be glued to the torn fragment
        and both lines would be lost.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        with open(self.path, "ab") as f:
            if f.tell() > 0:
                with open(self.path, "rb") as r:
                    r.seek(-1, os.SEEK_END)
                    last = r.read(1)
                if last != b"\n":
                    f.write(b"\n")
            f.flush()
            os.fsync(f.fileno())
        if created:
            fsync_dir(self.directory)
        self._ready = True

    def append(self, event: str, exp: str, **fields: Any) -> dict:
        """Durably append one record and return it (one write call, flush, fsync)."""
        if event not in EVENTS:
            raise ValueError(f"unknown journal event {event!r}; valid: {', '.join(EVENTS)}")
        if not self._ready:
            self._prepare()
        record = {"ts": self._clock(), "event": event, "exp": exp, **fields}
        data = (_dumps(record) + "\n").encode("utf-8")
        with open(self.path, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return record

    def queued(self, experiment: Experiment) -> dict:
        """Record that an experiment is part of the sweep (params kept for journal-only reports)."""
        return self.append("queued", experiment.id, params=experiment.params,
                           seed=experiment.seed, index=experiment.index)

    def queued_many(self, experiments: Iterable[Experiment]) -> list[dict]:
        """``queued`` for many experiments with one write+flush+fsync.

        One fsync per line would keep a 10,000-experiment sweep busy for minutes before its
        first experiment starts; a crash mid-write leaves whole lines plus one torn line.
        """
        if not self._ready:
            self._prepare()
        records = [{"ts": self._clock(), "event": "queued", "exp": e.id, "params": e.params,
                    "seed": e.seed, "index": e.index} for e in experiments]
        if not records:
            return records
        data = "".join(_dumps(r) + "\n" for r in records).encode("utf-8")
        with open(self.path, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return records

    def started(self, exp: str, attempt: int | None = None, **extra: Any) -> dict:
        """Record a start; ``extra`` may carry e.g. the supervisor's rank."""
        fields = dict(extra)
        if attempt is not None:
            fields["attempt"] = attempt
        return self.append("started", exp, **fields)

    def finished(self, exp: str, metrics: Mapping[str, Any] | None, wall: float) -> dict:
        return self.append("finished", exp, metrics=dict(metrics or {}), wall=wall)

    def failed(self, exp: str, error: str, traceback: str = "",
               wall: float | None = None) -> dict:
        fields: dict[str, Any] = {"error": error, "traceback": traceback}
        if wall is not None:
            fields["wall"] = wall
        return self.append("failed", exp, **fields)

    def retried(self, exp: str, attempt: int | None = None, reason: str = "") -> dict:
        fields: dict[str, Any] = {}
        if attempt is not None:
            fields["attempt"] = attempt
        if reason:
            fields["reason"] = reason
        return self.append("retried", exp, **fields)

    def interrupted(self, exp: str, reason: str = "", wall: float | None = None) -> dict:
        fields: dict[str, Any] = {"reason": reason}
        if wall is not None:
            fields["wall"] = wall
        return self.append("interrupted", exp, **fields)


def read_journal(path: str | os.PathLike) -> tuple[list[dict], list[str]]:
    """(records in file order, warnings) from a journal file or the folder holding it.

    A torn or unreadable line is skipped with a warning, wherever it is; a missing file is
    an empty journal (the sweep has not started yet).
    """
    p = Path(path)
    if p.is_dir():
        p = p / JOURNAL_NAME
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        return [], []
    records: list[dict] = []
    warnings: list[str] = []
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline, else an unterminated line
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        record = _parse(raw)
        if record is None:
            warnings.append(f"{p}:{number}: skipped an unreadable line ({len(raw)} bytes; "
                            "a torn write from an earlier crash?)")
        else:
            records.append(record)
    if tail.strip():
        record = _parse(tail)
        if record is None:
            warnings.append(f"{p}:{len(lines) + 1}: ignored an incomplete last line "
                            f"({len(tail)} bytes; the job was probably killed mid-write)")
        else:
            records.append(record)
    return records, warnings


def _parse(raw: bytes) -> dict | None:
    try:
        record = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if (not isinstance(record, dict) or record.get("event") not in EVENTS
            or not isinstance(record.get("exp"), str)):
        return None
    return record


@dataclass
class ExperimentState:
    """Latest known state of one experiment, folded from its journal records."""

    id: str
    status: str = "queued"  # queued | running | finished | failed | interrupted
    event: str = "queued"  # the latest journal event
    attempts: int = 0  # number of "started" records
    failures: int = 0  # number of "failed" records (interruptions do not count)
    metrics: dict | None = None
    wall: float | None = None  # seconds of the finishing (or failing) attempt
    error: str | None = None
    traceback: str | None = None
    params: dict | None = None  # from "queued", so a journal alone can be reported
    seed: int | None = None
    started_at: float | None = None  # ts of the latest "started"
    updated_at: float | None = None
    extra: dict = field(default_factory=dict)  # extras of the latest "started" (e.g. rank)

    @property
    def restarts(self) -> int:
        """Starts after the first: retries after failures plus resumes after interruptions."""
        return max(self.attempts - 1, 0)


def fold(records: Iterable[Mapping[str, Any]]) -> dict[str, ExperimentState]:
    """Each experiment's latest state from journal records in file order.

    A ``queued`` record after an experiment has started or ended only refreshes its params.
    """
    states: dict[str, ExperimentState] = {}
    for r in records:
        event, exp = r.get("event"), r.get("exp")
        if event not in EVENTS or not isinstance(exp, str):
            continue
        st = states.get(exp)
        if st is None:
            st = states[exp] = ExperimentState(exp)
        ts = r.get("ts")
        st.updated_at = ts if isinstance(ts, (int, float)) else st.updated_at
        # "queued" only describes an experiment; it never undoes a later state, so a resumed
        # runner may queue the whole sweep again without resurrecting finished experiments.
        if event != "queued" or st.attempts == 0 and st.event == "queued":
            st.event = event
            st.status = _STATUS[event]
        if event == "queued":
            if isinstance(r.get("params"), dict):
                st.params = r["params"]
            if isinstance(r.get("seed"), int):
                st.seed = r["seed"]
        elif event == "started":
            st.attempts += 1
            st.started_at = st.updated_at
            st.error = st.traceback = None
            st.metrics = None
            st.extra = {k: v for k, v in r.items() if k not in ("ts", "event", "exp")}
        elif event == "finished":
            metrics = r.get("metrics")
            st.metrics = dict(metrics) if isinstance(metrics, dict) else {}
            st.wall = _number(r.get("wall"))
            st.error = st.traceback = None
        elif event == "failed":
            st.failures += 1
            st.error = str(r.get("error", ""))
            st.traceback = str(r.get("traceback", ""))
            st.wall = _number(r.get("wall"))
    return states


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def resume_plan(experiments: Sequence[Experiment], states: Mapping[str, ExperimentState],
                retries: int) -> list[Experiment]:
    """Experiments that still have to run, in sweep order.

    Finished ones are skipped; never-finished ones (queued, running when the job died,
    interrupted) run again; failed ones run again while ``failures <= retries``.  Failures
    are counted rather than starts so an experiment cut off by a dying job does not lose
    its retry budget.
    """
    todo = []
    for e in experiments:
        st = states.get(e.id)
        if st is None or st.status not in ("finished", "failed"):
            todo.append(e)
        elif st.status == "failed" and st.failures <= retries:
            todo.append(e)
    return todo


def write_resolved_config(directory: str | os.PathLike, config: Mapping[str, Any]) -> Path:
    """Write ``<directory>/config.yaml`` atomically (tmp + fsync + rename); return its path.

    The resolved config (env vars expanded, overrides applied, defaults filled) is what
    ``report()`` re-reads, so it must never be half-written.
    """
    text = yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=None,
                          allow_unicode=True)
    return atomic_write(Path(directory) / CONFIG_NAME, text)
