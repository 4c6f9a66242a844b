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
- ``report``:      ``metrics`` (dict), ``step``, ``attempt``, ``checkpoint`` (optional: ``file``
  in the experiment's checkpoint folder, ``kind`` pickle|path), ``decision`` (continue|stop)
  and ``reason``: one ``trial.report(...)``, written on rank 0 after the checkpoint it names
  was committed and before the supervisor hears the scheduler's decision
- ``stopped``:     ``metrics`` (the last reported, plus what ``run`` returned), ``wall``,
  ``reason``: the scheduler stopped the experiment early; like ``finished``, never re-run

One more line, ``event: "sweep"`` (``exp`` empty), says which sweep the journal belongs to:
``fingerprint`` (a hash of :data:`FINGERPRINT_KEYS` of the resolved config) and ``config``
(those values), so a resume with a changed config is refused instead of mixing results.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ._fs import atomic_write, fsync_dir, open_append, write_all
from .config import Experiment, SweepConfig, SweepConfigError, expand

__all__ = [
    "CONFIG_NAME",
    "DONE",
    "EVENTS",
    "FINGERPRINT_KEYS",
    "JOURNAL_NAME",
    "SWEEP_EVENT",
    "ExperimentState",
    "Journal",
    "check_fingerprint",
    "experiments_of",
    "fingerprint",
    "fold",
    "json_safe",
    "read_journal",
    "resume_plan",
    "write_resolved_config",
]

JOURNAL_NAME = "journal.jsonl"
CONFIG_NAME = "config.yaml"
EVENTS = ("queued", "started", "finished", "failed", "retried", "interrupted", "report", "stopped")
DONE = ("finished", "stopped")  # statuses a resume never runs again
SWEEP_EVENT = "sweep"  # the journal's first line: which sweep it belongs to
#: What changes an experiment's result besides its params and seed: a journal started with
#: other values of these holds results of another sweep.
FINGERPRINT_KEYS = ("name", "entry", "init", "workers", "resources", "params", "scheduler", "search")
_MAX_DEPTH = 64  # nesting kept in a journaled value; deeper is stored as text
logger = logging.getLogger("yrmpi")
# Status shown to users for the latest event: "retried" means "waiting to run again".
_STATUS = {"queued": "queued", "started": "running", "finished": "finished",
           "failed": "failed", "retried": "queued", "interrupted": "interrupted",
           "report": "running", "stopped": "stopped"}


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


def _repr(value: Any) -> str:
    try:
        return _clean_text(repr(value))
    except Exception:  # an int of more than 4300 digits, a __repr__ that raises
        return f"<unrepresentable {type(value).__name__}>"


def _clean_text(text: str) -> str:
    """Lone surrogates (``os.fsdecode`` of a non-UTF-8 name) as ``\\udcxx`` escapes."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def json_safe(value: Any, where: str = "value") -> tuple[Any, list[str]]:
    """(a copy of ``value`` that JSON and UTF-8 can always hold, what had to change).

    Lone surrogates become ``\\udcxx`` escapes, cycles and nesting deeper than 64 levels the
    text ``<cycle>``/``repr``, other objects their ``item()``/``tolist()`` or ``repr``, ints
    too long for JSON their repr or a placeholder; each change is one line naming its key.
    """
    notes: list[str] = []
    on_path: set[int] = set()

    def walk(v: Any, path: str, depth: int) -> Any:
        if v is None or type(v) in (bool, float):
            return v
        if isinstance(v, float):  # np.float64 (a float subclass): a plain number, never its repr
            return float(v)
        if isinstance(v, int):
            if v.bit_length() > 4000:  # json.dumps refuses more than 4300 digits
                notes.append(f"{path}: an integer of {v.bit_length()} bits, stored as text")
                return _repr(v)
            return int(v)
        if isinstance(v, str):
            clean = _clean_text(v)
            if clean is not v and clean != v:
                notes.append(f"{path}: text with a lone surrogate (not UTF-8), stored escaped")
            return clean
        if isinstance(v, (dict, list, tuple)):
            if id(v) in on_path:
                notes.append(f"{path}: a value that contains itself, stored as '<cycle>'")
                return "<cycle>"
            if depth >= _MAX_DEPTH:
                notes.append(f"{path}: nested deeper than {_MAX_DEPTH} levels, stored as text")
                return _repr(v)[:10_000]
            on_path.add(id(v))
            try:
                if isinstance(v, dict):
                    out = {}
                    for k, item in list(v.items()):
                        key = k if isinstance(k, str) else _repr(k) if not isinstance(
                            k, (int, float, bool)) or k is None else json.dumps(k)
                        key = _clean_text(key)
                        out[key] = walk(item, f"{path}.{key}", depth + 1)
                    return out
                return [walk(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(list(v))]
            finally:
                on_path.discard(id(v))
        converted = _json_default(v)
        if converted is v or type(converted) is type(v):
            return _repr(v)
        return walk(converted, path, depth + 1)

    try:
        return walk(value, where, 0), notes
    except Exception as exc:  # a container whose iteration raises, ...
        return _repr(value), [*notes, f"{where}: could not be read ({type(exc).__name__}), stored as text"]


def _dumps(record: Mapping[str, Any]) -> str:
    """One JSON line; a value JSON or UTF-8 cannot take is stored in a safe form, never raised."""
    try:
        text = json.dumps(record, default=_json_default, ensure_ascii=False,
                          separators=(",", ":"))
        text.encode("utf-8")
        return text
    except (TypeError, ValueError, RecursionError, UnicodeEncodeError):
        pass
    safe, notes = json_safe(dict(record), "record")
    for note in notes:
        logger.warning("warning: journal %s %s: %s", record.get("event"), record.get("exp"), note)
    return json.dumps(safe, ensure_ascii=False, separators=(",", ":"))


def fingerprint(config: Mapping[str, Any]) -> tuple[str, dict]:
    """(hash, values) of :data:`FINGERPRINT_KEYS` of a resolved config (``SweepConfig.to_dict()``)."""
    values = {k: config.get(k) for k in FINGERPRINT_KEYS}
    values, _ = json_safe(values)
    blob = json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16], values


def _brief(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    out = []
    for key in FINGERPRINT_KEYS:
        a, b = old.get(key), new.get(key)
        if json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str):
            continue
        if isinstance(a, dict) and isinstance(b, dict) and key in ("params", "init", "resources"):
            names = [k for k in dict.fromkeys([*a, *b])
                     if json.dumps(a.get(k), sort_keys=True, default=str)
                     != json.dumps(b.get(k), sort_keys=True, default=str)]
            out.append(f"{key} ({', '.join(map(str, names))})")
        else:
            out.append(f"{key} {_brief(a)} -> {_brief(b)}")
    return out


def check_fingerprint(directory: str | os.PathLike, config: Mapping[str, Any],
                      records: Sequence[Mapping[str, Any]] | None = None) -> None:
    """Raise SweepConfigError (one line) when the folder's journal belongs to another sweep.

    The journal's ``sweep`` line is compared; a journal from before fingerprints is compared
    with the folder's ``config.yaml``.  An empty or missing journal matches anything.
    """
    directory = Path(directory)
    if records is None:
        records, _ = read_journal(directory)
    if not records:
        return
    old: Mapping[str, Any] | None = None
    for r in records:
        if r.get("event") == SWEEP_EVENT and isinstance(r.get("config"), dict):
            old = r["config"]
    if old is None:
        old = _legacy_fields(directory)
        if old is None:
            return
    _, new = fingerprint(config)
    _, old = fingerprint(old)
    changed = _changes(old, new)
    if changed:
        raise SweepConfigError(
            f"{directory / JOURNAL_NAME}: found the journal of a different sweep (changed: "
            f"{'; '.join(changed)}), expected the sweep it was started with; start over with "
            f"--fresh (the earlier files move to {directory}/previous-<time>/) or choose a new "
            "output folder (-o DIR)")


def _legacy_fields(directory: Path) -> dict | None:
    try:
        raw = yaml.safe_load((directory / CONFIG_NAME).read_text(encoding="utf-8"))
    except Exception:
        return None
    return raw if isinstance(raw, dict) else None


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
        created = not os.path.lexists(self.path)
        fd = open_append(self.path)
        try:
            size = os.fstat(fd).st_size
            if size > 0 and os.pread(fd, 1, size - 1) != b"\n":
                write_all(fd, b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_dir(self.directory)
        self._ready = True

    def _write(self, data: bytes) -> None:
        fd = open_append(self.path)
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def sweep(self, config: Mapping[str, Any]) -> dict:
        """Record which sweep this journal belongs to (see :func:`check_fingerprint`)."""
        if not self._ready:
            self._prepare()
        digest, values = fingerprint(config)
        record = {"ts": self._clock(), "event": SWEEP_EVENT, "exp": "", "fingerprint": digest,
                  "config": values}
        self._write((_dumps(record) + "\n").encode("utf-8"))
        return record

    def append(self, event: str, exp: str, **fields: Any) -> dict:
        """Durably append one record and return it (one write call, flush, fsync)."""
        if event not in EVENTS:
            raise ValueError(f"unknown journal event {event!r}; valid: {', '.join(EVENTS)}")
        if not self._ready:
            self._prepare()
        record = {"ts": self._clock(), "event": event, "exp": exp, **fields}
        self._write((_dumps(record) + "\n").encode("utf-8"))
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
        self._write("".join(_dumps(r) + "\n" for r in records).encode("utf-8"))
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

    def report(self, exp: str, metrics: Mapping[str, Any], step: float | None, attempt: int | None = None,
               checkpoint: Mapping[str, Any] | None = None, decision: str = "continue", reason: str = "") -> dict:
        """One ``trial.report``: its metrics, step, the checkpoint it committed and the decision."""
        fields: dict[str, Any] = {"step": step, "metrics": dict(metrics), "decision": decision}
        if attempt is not None:
            fields["attempt"] = attempt
        if checkpoint:
            fields["checkpoint"] = dict(checkpoint)
        if reason:
            fields["reason"] = reason
        return self.append("report", exp, **fields)

    def stopped(self, exp: str, metrics: Mapping[str, Any] | None, wall: float, reason: str = "") -> dict:
        """The scheduler stopped an experiment early: recorded with its last metrics, never re-run."""
        return self.append("stopped", exp, metrics=dict(metrics or {}), wall=wall, reason=reason)

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
    if p.is_dir() and p.name != JOURNAL_NAME:
        p = p / JOURNAL_NAME
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        return [], []
    except OSError as e:  # a directory named journal.jsonl, no permission, ...
        return [], [f"{p}: cannot be read ({e.strerror or e}); treated as empty"]
    records: list[dict] = []
    warnings: list[str] = []
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline, else an unterminated line
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        record = _parse(raw)
        if isinstance(record, str):
            warnings.append(f"{p}:{number}: skipped a line with {record}")
        elif record is None:
            warnings.append(f"{p}:{number}: skipped an unreadable line ({len(raw)} bytes; "
                            "a torn write from an earlier crash?)")
        else:
            records.append(record)
    if tail.strip():
        record = _parse(tail)
        if isinstance(record, str):
            warnings.append(f"{p}:{len(lines) + 1}: skipped a line with {record}")
        elif record is None:
            warnings.append(f"{p}:{len(lines) + 1}: ignored an incomplete last line "
                            f"({len(tail)} bytes; the job was probably killed mid-write)")
        else:
            records.append(record)
    return records, warnings


def _is_num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# Fields each event must (required) or may (optional) have, with their JSON types: a line that
# breaks these was not written by a sweep (forged, edited, another program) and is skipped.
_REQUIRED: dict[str, dict[str, Callable[[Any], bool]]] = {
    "finished": {"metrics": lambda v: isinstance(v, dict), "wall": _is_num},
    "stopped": {"metrics": lambda v: isinstance(v, dict), "wall": _is_num},
    "report": {"metrics": lambda v: isinstance(v, dict)},
}
_OPTIONAL: dict[str, Callable[[Any], bool]] = {
    "ts": _is_num, "params": lambda v: isinstance(v, dict),
    "seed": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "index": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "trial": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "attempt": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "error": lambda v: isinstance(v, str), "traceback": lambda v: isinstance(v, str),
    "reason": lambda v: isinstance(v, str), "wall": lambda v: v is None or _is_num(v),
    "step": lambda v: v is None or _is_num(v), "decision": lambda v: v in ("continue", "stop"),
    "checkpoint": lambda v: isinstance(v, dict) and isinstance(v.get("file"), str)
    and v.get("kind") in ("pickle", "path") and "/" not in v["file"] and v["file"] not in ("", ".", ".."),
}


def _depth(value: Any, limit: int) -> int:
    """Nesting depth up to ``limit + 1``, without recursion (a forged line may nest thousands of levels)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            deepest = max(deepest, d)
            if d > limit:
                return d
            stack.extend((c, d + 1) for c in (v.values() if isinstance(v, dict) else v))
    return deepest


def _parse(raw: bytes) -> dict | str | None:
    """The record; None for a torn/unreadable line; a reason (str) for a malformed record."""
    try:
        record = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(record, dict):
        return None
    event = record.get("event")
    if event == SWEEP_EVENT:
        return record if isinstance(record.get("config"), dict) else "a malformed sweep record"
    if event not in EVENTS or not isinstance(record.get("exp"), str):
        return None
    if _depth(record, _MAX_DEPTH + 2) > _MAX_DEPTH + 2:  # the record and its metrics mapping add 2
        return f"values nested deeper than {_MAX_DEPTH} levels (not written by a sweep)"
    for key, ok in _REQUIRED.get(event, {}).items():
        if key not in record or not ok(record[key]):
            what = "no" if key not in record else "a malformed"
            return f"a {event!r} record with {what} {key!r} (incomplete or not written by a sweep)"
    for key, ok in _OPTIONAL.items():
        if key in record and not ok(record[key]):
            return f"a {event!r} record with a malformed {key!r} (not written by a sweep)"
    return record


@dataclass
class ExperimentState:
    """Latest known state of one experiment, folded from its journal records."""

    id: str
    status: str = "queued"  # queued | running | finished | stopped | failed | interrupted
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
    index: int | None = None  # position in the sweep (from "queued"): ties are broken by it
    reports: int = 0  # "report" records, over all attempts
    step: float | None = None  # step of the latest report
    last: dict | None = None  # metrics of the latest report
    reported_at: float | None = None  # ts of the latest report
    checkpoint: dict | None = None  # the latest committed checkpoint: {file, kind, step}
    reason: str | None = None  # why it was stopped early

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
            if isinstance(r.get("index"), int):
                st.index = r["index"]
        elif event == "report":
            st.reports += 1
            step = r.get("step")
            st.step = step if _is_num(step) else st.step
            st.last = dict(r["metrics"]) if isinstance(r.get("metrics"), dict) else st.last
            st.reported_at = st.updated_at
            ckpt = r.get("checkpoint")
            if isinstance(ckpt, dict):
                st.checkpoint = {"file": ckpt.get("file"), "kind": ckpt.get("kind"), "step": step}
            if r.get("decision") == "stop":  # decided: a resume must not run it again
                st.status, st.metrics = "stopped", dict(st.last or {})
                st.reason = str(r.get("reason", "")) or "stopped by the scheduler"
        elif event == "stopped":
            metrics = r.get("metrics")
            st.metrics = dict(metrics) if isinstance(metrics, dict) else dict(st.last or {})
            st.wall = _number(r.get("wall"))
            st.reason = str(r.get("reason", "")) or st.reason or "stopped by the scheduler"
            st.error = st.traceback = None
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
        if st is None or st.status not in (*DONE, "failed"):
            todo.append(e)
        elif st.status == "failed" and st.failures <= retries:
            todo.append(e)
    return todo


def experiments_of(config: SweepConfig, records: Iterable[Mapping[str, Any]]) -> list[Experiment]:
    """The sweep's experiments: the expanded grid, or, for a search (its trials are asked as the
    sweep runs), those its journal queued so far, in the order they were asked."""
    if not config.search:
        return expand(config)
    out: list[Experiment] = []
    seen: set[str] = set()
    for r in records:
        if r.get("event") == "queued" and isinstance(r.get("params"), dict) and r.get("exp") not in seen:
            seen.add(r["exp"])
            seed = r.get("seed") if isinstance(r.get("seed"), int) else config.seeds[0]
            out.append(Experiment(r["exp"], dict(r["params"]), seed, len(out)))
    return out


def write_resolved_config(directory: str | os.PathLike, config: Mapping[str, Any]) -> Path:
    """Write ``<directory>/config.yaml`` atomically (tmp + fsync + rename); return its path.

    The resolved config (env vars expanded, overrides applied, defaults filled) is what
    ``report()`` re-reads, so it must never be half-written.
    """
    text = yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=None,
                          allow_unicode=True)
    return atomic_write(Path(directory) / CONFIG_NAME, text)
