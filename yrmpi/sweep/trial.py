"""What an experiment's supervisor gets besides its params: ``run(params, trial)``.

``trial.report(metrics, step=None, checkpoint=None)`` sends one report to rank 0, which
journals it (the journal has one writer, rank 0) and answers with the scheduler's decision
before ``report`` returns: ``None`` to go on, or :class:`TrialStopped` raised to stop.

How a report reaches rank 0: rank 0 hosts no instances, so nothing there can be called.
Instead the runner creates each supervisor as a subclass of the entry class (named after
the experiment, so its output lines say which experiment they belong to) with two methods
of ours: ``_yrmpi_run`` wraps the user's ``run``, and ``_yrmpi_exchange`` is a long poll that
rank 0 keeps outstanding on every running supervisor (the supervisor runs with one more
call at once than the entry asked for).  ``report`` puts the report in the supervisor's
:class:`Mailbox` and waits; the pending exchange call returns it to rank 0, which journals it
(append + fsync), decides, and sends the decision with its next exchange call.  So the
decision is synchronous for the supervisor, a report is on disk before its decision is
known, and no instance has to live on rank 0.  A worker that got the trial passed to it
reports through the supervisor (``trial.channel``, the supervisor's own handle): one more hop.

Checkpoints are committed by the process that reports, before the report travels: a dict is
pickled to a temporary file in ``trial.checkpoint_dir``, fsync'd, renamed and the folder
fsync'd; a path the user wrote is fsync'd and renamed into that folder.  Only then is the
report (naming the file) sent, and journaled, so after a kill at any instant the journal
names only checkpoints that are whole on disk; :meth:`Trial.restore` loads the last one.
"""

from __future__ import annotations

import os
import pickle
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.options import InvokeOptions
from ._fs import atomic_write, fsync_dir

__all__ = ["Mailbox", "Trial", "TrialStopped", "supervised"]

KEEP_CHECKPOINTS = 2  # the latest committed one, and the one before it while the latest is new


class TrialStopped(Exception):
    """Raised by ``trial.report`` when the scheduler stopped the experiment early.

    Let it propagate out of ``run`` (or return): the experiment is recorded as ``stopped``
    with its last reported metrics and is never run again.
    """


@dataclass(frozen=True)
class Trial:
    """One attempt of one experiment, as the sweep runner hands it to the supervisor.

    The supervisor creates its own ``workers`` workers with ``worker_options`` (built from
    ``resources.worker``), so the sweep's capacity plan matches what really gets placed.
    ``attempt`` counts starts of this experiment (1 on the first run; retries and resumes
    after an interruption add one).  ``checkpoint_dir`` is the experiment's own folder under
    the output folder; ``restore()`` gives the last committed checkpoint and its step.
    """

    id: str  # stable experiment id (hash of params + seed)
    seed: int
    workers: int
    worker_options: InvokeOptions = field(default_factory=InvokeOptions)
    attempt: int = 1
    checkpoint_dir: str | None = None
    restore_point: dict | None = None  # {file, kind, step}: the last journaled checkpoint
    channel: Any = field(default=None, compare=False, repr=False)  # the supervisor's handle

    @property
    def key(self) -> str:
        return f"{self.id}/{self.attempt}"

    def report(self, metrics: Any, step: float | None = None, checkpoint: Any = None) -> None:
        """Journal ``metrics`` (a dict; numpy/torch scalars become numbers) at ``step``.

        ``checkpoint``: a picklable object (a dict of state, say) saved for you, or the path
        of a file or folder you wrote (it is moved into ``checkpoint_dir``).  Returns when rank 0
        journaled the report; raises :class:`TrialStopped` when the scheduler stops the
        experiment.
        """
        box = _MAILBOXES.get(self.key)
        if box is not None and box.stopped is not None:
            raise TrialStopped(box.stopped)
        item: dict[str, Any] = {"metrics": plain_metrics(metrics), "step": _plain(step)}
        if checkpoint is not None:
            item["checkpoint"] = self._commit(checkpoint, item["step"])
        if box is not None:
            decision, reason = box.submit(item)
        elif self.channel is not None:
            import yrmpi

            decision, reason = yrmpi.get(self.channel._yrmpi_report.invoke(self.key, item))
        else:
            raise RuntimeError("trial.report() needs a trial from a running sweep (or passed on from its "
                               "supervisor)")
        if decision == "stop":
            raise TrialStopped(reason)

    @property
    def should_stop(self) -> bool:
        """True once the scheduler stopped this experiment (in its supervisor's process)."""
        box = _MAILBOXES.get(self.key)
        return box is not None and box.stopped is not None

    def restore(self) -> tuple[Any, float | None]:
        """(the last committed checkpoint, its step), or (None, None) when there is none.

        A pickled checkpoint is loaded; a path checkpoint is returned as its path (a str).
        """
        point = self.restore_point
        if not point or not self.checkpoint_dir:
            return None, None
        path = Path(self.checkpoint_dir) / point["file"]
        if point.get("kind") == "path":
            return str(path), point.get("step")
        with open(path, "rb") as f:
            return pickle.load(f), point.get("step")

    def _commit(self, checkpoint: Any, step: Any) -> dict:
        if not self.checkpoint_dir:
            raise RuntimeError("this trial has no checkpoint_dir (not from a running sweep)")
        folder = Path(self.checkpoint_dir)
        folder.mkdir(parents=True, exist_ok=True)
        tag = f"step-{_step_tag(step)}-a{self.attempt}-{os.getpid()}-{threading.get_ident() % 10**6}"
        if isinstance(checkpoint, (str, os.PathLike)):
            src = Path(checkpoint)
            if not src.exists():
                raise FileNotFoundError(f"trial.report: checkpoint {src} does not exist")
            _fsync_tree(src)
            name = f"{tag}-{src.name}"
            os.replace(src, folder / name)  # on the same filesystem: write it under trial.checkpoint_dir
            fsync_dir(folder)
            return {"file": name, "kind": "path"}
        name = f"{tag}.pkl"
        atomic_write(folder / name, pickle.dumps(checkpoint, protocol=pickle.HIGHEST_PROTOCOL))
        return {"file": name, "kind": "pickle"}


def _step_tag(step: Any) -> str:
    if isinstance(step, int) and not isinstance(step, bool):
        return f"{step:08d}"
    return "x" if step is None else str(step).replace("/", "_")


def _fsync_tree(path: Path) -> None:
    if path.is_dir():
        for root, _dirs, files in os.walk(path):
            for name in files:
                _fsync_file(Path(root) / name)
            fsync_dir(root)
    else:
        _fsync_file(path)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _plain(value: Any) -> Any:
    """numpy/torch scalars as Python numbers (``item()``); anything else unchanged."""
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, float):
        return float(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    item = getattr(value, "item", None)
    if callable(item):
        try:
            out = item()
        except Exception:  # an array of more than one element
            tolist = getattr(value, "tolist", None)
            try:
                return tolist() if callable(tolist) else value
            except Exception:
                return value
        if isinstance(out, (bool, int, float, str)):
            return out
    return value


def plain_metrics(metrics: Any) -> dict:
    """The dict a report journals: keys as strings, scalars as plain numbers."""
    if metrics is None:
        return {}
    if not isinstance(metrics, dict):
        metrics = {"value": metrics}
    return {str(k): _plain(v) for k, v in metrics.items()}


# -- the supervisor's side of the exchange ---------------------------------------------------------
class Mailbox:
    """Reports of one attempt waiting for rank 0, and the decisions that answer them."""

    def __init__(self, trial: Trial | None = None) -> None:
        self.cond = threading.Condition()
        self.pending: list[dict] = []
        self.decisions: dict[int, tuple[str, str]] = {}
        self.seq = 0
        self.closed = False
        self.stopped: str | None = None
        self.folder = Path(trial.checkpoint_dir) if trial is not None and trial.checkpoint_dir else None
        point = trial.restore_point if trial is not None else None
        self.committed: list[str] = [point["file"]] if point else []

    def submit(self, item: dict) -> tuple[str, str]:
        """Queue a report for rank 0 and wait for its decision."""
        with self.cond:
            if self.stopped is not None:
                return "stop", self.stopped
            self.seq += 1
            seq = self.seq
            self.pending.append({**item, "seq": seq})
            self.cond.notify_all()
            while seq not in self.decisions:
                self.cond.wait(1.0)
            decision, reason = self.decisions.pop(seq)
            if decision == "stop":
                self.stopped = reason or "stopped by the scheduler"
        if item.get("checkpoint"):
            self._prune(item["checkpoint"]["file"])
        return decision, reason

    def exchange(self, decisions: dict, wait_s: float) -> tuple[list[dict], bool]:
        """Rank 0's long poll: deliver decisions, then wait up to ``wait_s`` for reports."""
        with self.cond:
            self.decisions.update({int(k): tuple(v) for k, v in decisions.items()})
            self.cond.notify_all()
            if not self.pending and not self.closed:
                self.cond.wait(wait_s)
            items, self.pending = self.pending, []
            return items, self.closed and not items

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def _prune(self, newest: str) -> None:
        """Keep the newest journaled checkpoint and the one before; remove older ones and those
        of attempts that were killed before their report was journaled."""
        if self.folder is None:
            return
        self.committed.append(newest)
        keep = set(self.committed[-KEEP_CHECKPOINTS:])
        self.committed = self.committed[-KEEP_CHECKPOINTS:]
        try:
            names = os.listdir(self.folder)
        except OSError:
            return
        for name in names:
            if name.startswith("step-") and name not in keep:
                path = self.folder / name
                try:
                    if path.is_dir() and not path.is_symlink():
                        import shutil

                        shutil.rmtree(path)
                    else:
                        path.unlink()
                except OSError:
                    pass


_MAILBOXES: dict[str, Mailbox] = {}
_LOCK = threading.Lock()


def _mailbox(key: str, trial: Trial | None = None) -> Mailbox:
    with _LOCK:
        box = _MAILBOXES.get(key)
        if box is None:
            box = _MAILBOXES[key] = Mailbox(trial)
        elif trial is not None and box.folder is None:
            box.folder = Path(trial.checkpoint_dir) if trial.checkpoint_dir else None
            if trial.restore_point:
                box.committed = [trial.restore_point["file"], *box.committed]
        return box


def _sup_run(self: Any, params: dict, trial: Trial) -> tuple[str, Any]:
    box = _mailbox(trial.key, trial)
    try:
        result = getattr(self, type(self)._yrmpi_run_name)(params, trial)
        return ("stopped", box.stopped) if box.stopped is not None else ("ok", result)
    except TrialStopped as exc:
        return "stopped", str(exc) or box.stopped
    finally:
        box.close()


def _sup_exchange(self: Any, key: str, decisions: dict, wait_s: float) -> tuple[list[dict], bool]:
    box = _mailbox(key)
    items, done = box.exchange(decisions, wait_s)
    if done:
        with _LOCK:
            if _MAILBOXES.get(key) is box:
                del _MAILBOXES[key]
    return items, done


def _sup_report(self: Any, key: str, item: dict) -> tuple[str, str]:
    return _mailbox(key).submit(item)


def supervised(cls: type, exp_id: str, run: str) -> type:
    """The entry class as this experiment's supervisor: named ``<Class> <exp id>`` (what its
    output lines are prefixed with) and given the exchange methods above."""
    namespace = {"_yrmpi_run_name": run, "_yrmpi_run": _sup_run, "_yrmpi_exchange": _sup_exchange,
                 "_yrmpi_report": _sup_report, "__module__": cls.__module__,
                 "__qualname__": f"{cls.__qualname__} {exp_id}", "__doc__": cls.__doc__}
    return type(cls.__name__, (cls,), namespace)
