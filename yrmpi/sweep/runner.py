"""Running a sweep: the driver loop on rank 0, and how many ranks a local launch needs.

The driver creates one supervisor per experiment (``Entry.options(supervisor).invoke(**init)``)
and calls ``run(params, trial)`` on it; the supervisor creates its own workers from
``trial.worker_options``. Up to the plan's concurrency run at once, and the next one starts
as soon as one ends. Every state change is appended to the journal before the loop moves on,
so a job killed at any instant resumes from the journal (see journal.py).

Stopping: SIGTERM/SIGUSR1 (what Slurm sends before the time limit) only set a flag; the loop
stops starting experiments, gives running ones ``grace_period`` seconds, journals the rest as
interrupted, writes the summary and exits with EXIT_INTERRUPTED, on which batch scripts requeue.
A second signal cuts the grace period short.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
import os
import signal
import sys
import time
import traceback
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..core.errors import YRInvokeError
from ..core.options import Config, InvokeOptions
from ..launch import (  # the exit codes, defined once (docs/sweeps.md has the table)
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_LOST,
    EXIT_OK,
    EXIT_OUTPUT,
    launcher_rank,
)
from ..scheduling.placement import RankCapacity
from .config import Experiment, Resources, SweepConfig, SweepConfigError, expand, import_entry, load
from .config.types import MAX_RANKS
from .curves import CURVES_CSV, CURVES_PNG, plot_curves, write_curves
from .journal import (
    CONFIG_NAME,
    JOURNAL_NAME,
    SWEEP_EVENT,
    Journal,
    check_fingerprint,
    experiments_of,
    fold,
    json_safe,
    read_journal,
    resume_plan,
    write_resolved_config,
)
from .output import SweepLock, check_output, output_error
from .plan import CapacityPlan, format_plan, plan_capacity, ranks_from_usage
from .report import PLOT_PNG, RESULTS_CSV, SUMMARY_JSON, normalize_metrics, plot, report, status_line
from .report import write_results as _write_results
from .schedulers import make_scheduler, replay
from .trial import Trial, supervised

__all__ = [
    "EXIT_CONFIG", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_LOST", "EXIT_OK", "EXIT_OUTPUT", "STOP_SIGNALS",
    "StopRequest", "SweepOptions", "SweepRunner", "describe_error", "drive", "dry_run_ranks", "exit_code",
    "fresh_requested",
    "ignore_stop_signals", "launcher_rank", "load_config", "local_ranks", "open_output", "plan_text",
    "prepare_output", "size_launch", "summarize", "sweep_experiments", "todo_for", "work_left",
]

logger = logging.getLogger("yrmpi")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
POLL_S = 0.5  # longest the loop waits on results before it looks at the stop flag again
CHECKPOINTS = "checkpoints"  # OUTPUT/checkpoints/<experiment id>/: trial.checkpoint_dir
MACHINE_FILE_NAMES = (JOURNAL_NAME, CONFIG_NAME, RESULTS_CSV, SUMMARY_JSON, PLOT_PNG, CURVES_CSV, CURVES_PNG,
                      CHECKPOINTS)
EXCHANGE_WAIT_S = 2.0  # longest a supervisor's exchange call waits for a report before it returns empty


def _log(message: str) -> None:
    """The command's own output: plan, status lines, the report."""
    print(message, flush=True)


def _warn(message: str) -> None:
    """A diagnostic: through the `yrmpi` logger (stderr by default)."""
    logger.warning("%s", message)


# -- options and config ---------------------------------------------------------------------------
@dataclass
class SweepOptions:
    """What the command line says about one sweep (shared by the launcher and rank 0)."""

    file: str
    overrides: Sequence[str] = ()
    output: str | None = None
    max_concurrent: int | None = None
    fresh: bool = False
    resume: bool = False


def load_config(opts: SweepOptions) -> SweepConfig:
    """The validated config with `--set`, `-o` and `--max-concurrent` applied; SweepConfigError."""
    config = load(opts.file, overrides=list(opts.overrides))
    changes: dict[str, Any] = {}
    if opts.output:
        changes["output"] = opts.output
    if opts.max_concurrent is not None:
        changes["max_concurrent"] = opts.max_concurrent
    config = dataclasses.replace(config, **changes) if changes else config
    if config.search:
        from .search import require_optuna

        require_optuna()  # before MPI starts: a missing extra is bad input (exit 2), one line
    return config


def sweep_experiments(config: SweepConfig, fresh: bool = False) -> list[Experiment]:
    """The experiments known before a run: the grid, or the trials a search's journal holds."""
    if not config.search:
        return expand(config)
    if fresh:
        return []
    records, _ = read_journal(Path(config.output))
    return experiments_of(config, records)


def work_left(config: SweepConfig, experiments: Sequence[Experiment], todo: Sequence[Experiment]) -> int:
    """Experiments a run has to start: those left, plus the trials a search has not asked yet."""
    return len(todo) + (max(config.total - len(experiments), 0) if config.search else 0)


def _restarted_by_slurm() -> bool:
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0
    except ValueError:
        return False


def fresh_requested(opts: SweepOptions) -> bool:
    """--fresh, unless this is a requeued Slurm job (starting over there would lose the progress
    the requeue exists to keep)."""
    return opts.fresh and not _restarted_by_slurm()


def todo_for(config: SweepConfig, experiments: Sequence[Experiment], fresh: bool) -> list[Experiment]:
    """Experiments a run would start (all with fresh, else what the journal has not finished)."""
    if fresh:
        return list(experiments) if not config.search else []
    records, _ = read_journal(Path(config.output))
    return resume_plan(experiments, fold(records), config.retries)


def prepare_output(config: SweepConfig, opts: SweepOptions) -> tuple[Path, list[dict], list[str]]:
    """(output folder, journal records, read warnings); --fresh first moves an earlier run's files
    into ``previous-<time>/`` (nothing is deleted)."""
    out = Path(config.output).absolute()
    if opts.fresh and _restarted_by_slurm():
        _log("yrmpi sweep: --fresh ignored: this is a requeued Slurm job (SLURM_RESTART_COUNT > 0); resuming")
    if fresh_requested(opts) and (out / JOURNAL_NAME).exists():
        backup = out / time.strftime("previous-%Y%m%d-%H%M%S")
        suffix = 1
        while backup.exists():
            suffix += 1
            backup = backup.with_name(f"{backup.name.split('.')[0]}.{suffix}")
        backup.mkdir(parents=True)
        for name in MACHINE_FILE_NAMES:
            if (out / name).exists():
                os.replace(out / name, backup / name)
        _log(f"yrmpi sweep: --fresh: moved the earlier run's files to {backup}")
    records, warnings = read_journal(out)
    return out, records, warnings


def open_output(config: SweepConfig, experiments: Sequence[Experiment], opts: SweepOptions) -> SweepLock:
    """Before anything is written: prove the output folder usable, take its lock, and refuse a
    journal of another sweep (unless --fresh will move it aside). SweepConfigError otherwise."""
    check_output(config.output, max(len(experiments), config.total), config.retries)
    lock = SweepLock(config.output).acquire()
    try:
        if not fresh_requested(opts):
            check_fingerprint(config.output, config.to_dict())
    except BaseException:
        lock.release()
        raise
    return lock


# -- sizing a local launch ------------------------------------------------------------------------
def local_ranks(hosts: int, conf: Config | None = None) -> list[RankCapacity]:
    """The host ranks a local launch of ``hosts + 1`` ranks gets (the runtime's own defaults)."""
    from ..runtime import _node_memory_mb

    cfg = (conf or Config()).resolved()
    memory = cfg.memory_per_rank if cfg.memory_per_rank is not None else _node_memory_mb() // (hosts + 1)
    return [RankCapacity(rank, "local#0", cfg.cpu_per_rank, memory, dict(cfg.custom_resources))
            for rank in range(1, hosts + 1)]


def _check_rank_count(ranks: int, what: str) -> None:
    if ranks > MAX_RANKS:
        raise SweepConfigError(f"{what}: found {ranks} ranks (1 driver + {ranks - 1} host ranks), expected at "
                               f"most {MAX_RANKS} (1 driver + {MAX_RANKS - 1} host ranks)")


def size_launch(config: SweepConfig, n_todo: int, ranks: int | None = None,
                cores: int | None = None) -> tuple[int, CapacityPlan]:
    """(ranks to launch, plan on them) for `yrmpi sweep` on this machine.

    With `ranks` (-n) the plan is for those. Otherwise: enough host ranks for the wanted
    concurrency, plus the driver. Wanted = max_concurrent, else as many experiments as this
    machine's cores hold (at least one), never more than there are experiments to run; idle
    ranks cost no CPU, but a rank per worker of every experiment would swamp a laptop.
    Raises SweepConfigError when not even one experiment fits.

    The fewest host ranks are searched from the bound that dividing cpu totals gives, by
    doubling and then bisection (more ranks never hold fewer experiments): O(log n) plans of
    O(n log n) each for n instances, instead of one plan per candidate count.
    """
    if ranks is not None:
        _check_rank_count(ranks, "-n")
        return ranks, plan_capacity(config, local_ranks(ranks - 1), n_todo)
    per_experiment = config.supervisor_resources.cpu + config.workers * config.worker_resources.cpu
    cores = cores or os.cpu_count() or 1
    if config.max_concurrent is not None:
        wanted = config.max_concurrent
    elif per_experiment > 0:
        wanted = max(cores * 1000 // per_experiment, 1)
    else:
        wanted = max(n_todo, 1)
    wanted = max(min(wanted, n_todo), 1)
    limit = min(wanted * (config.workers + 1), MAX_RANKS - 1)  # one rank per instance always suffices
    rank_cpu = Config().resolved().cpu_per_rank
    low = math.ceil(wanted * per_experiment / rank_cpu) if rank_cpu > 0 else 1
    low = min(max(low, 1), limit)

    best: tuple[int, int] | None = None  # (fit, hosts)
    error: SweepConfigError | None = None
    tried: dict[int, int] = {}

    def fit_on(hosts: int) -> int:
        nonlocal best, error
        if hosts not in tried:
            try:
                tried[hosts] = plan_capacity(config, local_ranks(hosts), wanted).fit
            except SweepConfigError as exc:
                error, tried[hosts] = exc, -1
            fit = tried[hosts]
            if fit >= 0 and (best is None or fit > best[0] or fit == best[0] and hosts < best[1]):
                best = (fit, hosts)
        return tried[hosts]

    below, hosts = low - 1, low  # every count <= below is known (or assumed) too small
    while fit_on(hosts) < wanted and hosts < limit:
        below, hosts = hosts, min(hosts * 2, limit)
    if fit_on(hosts) >= wanted:
        while hosts - below > 1:  # the smallest count in (below, hosts] that holds them all
            middle = (below + hosts) // 2
            if fit_on(middle) >= wanted:
                hosts = middle
            else:
                below = middle
        best = (tried[hosts], hosts)
    if best is None:
        assert error is not None
        raise error
    hosts = best[1]
    return hosts + 1, plan_capacity(config, local_ranks(hosts), n_todo)


# -- signals --------------------------------------------------------------------------------------
DOUBLE_SIGNAL_S = 1.0


class StopRequest:
    """Counts SIGTERM/SIGUSR1 on rank 0. The handler only sets a flag: the loop acts on it."""

    def __init__(self) -> None:
        self.count = 0
        self.name: str | None = None
        self._first = 0.0
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._on_signal)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        # `scancel --signal=USR1 --full` delivers one signal twice within milliseconds (to the
        # launcher and through the batch shell): only a signal a second later means "stop now".
        now = time.monotonic()
        if self.count and now - self._first < DOUBLE_SIGNAL_S:
            return
        self.count += 1
        if self.name is None:
            self.name = signal.Signals(signum).name
            self._first = now


def ignore_stop_signals() -> None:
    """Host ranks: a signal sent to every rank (srun --signal, scancel --full) must not end the
    instances rank 0 is giving a grace period; rank 0 ends the job when it is done."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


# -- the driver loop ------------------------------------------------------------------------------
def describe_error(exc: BaseException) -> tuple[str, str]:
    """(one line for tables and logs, full traceback for the journal)."""
    if isinstance(exc, YRInvokeError):
        head = str(exc.args[0]) if exc.args else type(exc).__name__
        tb = exc.remote_traceback or ""
        if exc.origin:
            tb = f"in {exc.origin}:\n{tb}"
    else:
        text = str(exc)
        head = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    lines = [line.strip() for line in head.splitlines() if line.strip()]
    line = lines[0] if lines else type(exc).__name__
    return (line if len(line) <= 500 else line[:497] + "..."), tb


def _supervisor_creator(config: SweepConfig) -> Any:
    """The entry as a yr instance creator (a plain class is wrapped, a decorated one kept)."""
    import yrmpi

    from ..api.handles import InstanceCreator

    entry = import_entry(config.entry, config.base_dir, source=config.source)
    if isinstance(entry, InstanceCreator):
        return entry
    if inspect.isclass(entry):
        return yrmpi.instance(entry)
    raise SweepConfigError(f"{config.source}: entry: found {type(entry).__name__} {config.entry!r}, "
                           "expected a class (plain or decorated with @yr.instance)")


def _options(base: InvokeOptions, res: Resources) -> InvokeOptions:
    return dataclasses.replace(base, cpu=res.cpu, memory=res.memory, custom_resources=dict(res.custom))


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class _Running:
    exp: Experiment
    handle: Any
    ref: Any
    attempt: int
    started: float  # monotonic
    deadline: float | None
    key: str = ""  # the trial's mailbox key on its supervisor
    exchange: Any = None  # the outstanding long poll for its reports (None once run() returned)
    stopped: str | None = None  # why the scheduler stopped it
    last: dict | None = None  # metrics of its latest report


class SweepRunner:
    """Runs the experiments left in a sweep on rank 0 of an initialised yrmpi job."""

    def __init__(self, config: SweepConfig, experiments: Sequence[Experiment], todo: Sequence[Experiment],
                 plan: CapacityPlan, journal: Journal, records: list[dict], stop: StopRequest,
                 log: Callable[[str], None] = _log, ranks: Sequence[RankCapacity] | None = None,
                 creator: Any = None, warn: Callable[[str], None] = _warn, search: Any = None) -> None:
        self.config = config
        self.experiments = list(experiments)
        self.known = {e.id for e in self.experiments}
        self.queue: deque[Experiment] = deque(todo)
        self.plan = plan
        self.journal = journal
        self.records = records
        self.stop = stop
        self.log = log
        self.warn = warn
        states = fold(records)
        self.attempts = {i: s.attempts for i, s in states.items()}
        self.failures = {i: s.failures for i, s in states.items()}
        self.running: dict[int, _Running] = {}
        creator = creator if creator is not None else _supervisor_creator(config)
        self.creator = creator.options(_options(creator.invoke_options, config.supervisor_resources))
        self.worker_options = _options(InvokeOptions(), config.worker_resources)
        self.started_at = time.time()
        self._ppid = os.getppid()
        self.stopped_by: str | None = None
        self.ranks = list(ranks) if ranks is not None else None  # live host ranks the plan is for
        self.out_of_ranks = False
        self.exchanges: dict[int, _Running] = {}  # exchange ref id -> its experiment
        self.checkpoints: dict[str, list[dict]] = {}  # experiment -> journaled checkpoints, oldest first
        self.last: dict[str, dict] = {}
        for r in records:
            if r.get("event") == "report" and isinstance(r.get("metrics"), dict):
                self.last[r["exp"]] = r["metrics"]
                if isinstance(r.get("checkpoint"), dict):
                    self.checkpoints.setdefault(r["exp"], []).append({**r["checkpoint"], "step": r.get("step")})
        self.scheduler = make_scheduler(config.scheduler, config.metric.mode) if config.metric else None
        if self.scheduler is not None:
            differ = replay(self.scheduler, records, config.metric.name)
            if differ:
                self.warn(f"warning: {differ} journaled scheduler decisions differ from a replay (was the "
                          "scheduler changed?); the journaled ones stand")
        self.search = search  # an OptunaSearch: asked for the next trial when a slot is free, told each end
        self.on_told: Callable[[Experiment, str, dict], None] | None = search.tell if search is not None else None

    def _append(self, record: dict) -> None:
        self.records.append(record)

    # -- one experiment -------------------------------------------------------------------------
    def checkpoint_dir(self, e: Experiment) -> Path:
        return self.journal.directory.absolute() / CHECKPOINTS / e.id

    def restore_point(self, e: Experiment) -> dict | None:
        """The last journaled checkpoint of an experiment whose file exists, or None."""
        folder = self.checkpoint_dir(e)
        for point in reversed(self.checkpoints.get(e.id, [])):
            if os.path.lexists(folder / point["file"]):
                return dict(point)
        return None

    def _creator_for(self, e: Experiment) -> Any:
        """This experiment's supervisor class: the entry named ``<Class> <id>`` (output lines say
        which experiment they come from) with the report exchange; one more call at once, so the
        exchange (and a worker's report) runs beside ``run``."""
        base = getattr(self.creator, "__wrapped__", None)
        if base is None:  # a stand-in creator (tests)
            return self.creator
        import yrmpi

        given = self.creator.invoke_options
        opts = dataclasses.replace(given, concurrency=min(given.concurrency + 2 + self.config.workers, 1000))
        return yrmpi.instance(supervised(base, e.id, self.config.run)).options(opts)

    def _start(self, e: Experiment) -> None:
        attempt = self.attempts.get(e.id, 0) + 1
        self.attempts[e.id] = attempt
        self._append(self.journal.started(e.id, attempt=attempt))
        began = time.monotonic()
        try:
            handle = self._creator_for(e).invoke(**self.config.init)
            trial = Trial(id=e.id, seed=e.seed, workers=self.config.workers, worker_options=self.worker_options,
                          attempt=attempt, checkpoint_dir=str(self.checkpoint_dir(e)),
                          restore_point=self.restore_point(e), channel=handle)
            if hasattr(handle, "_yrmpi_run"):
                ref = handle._yrmpi_run.invoke(dict(e.params), trial)
                exchange = handle._yrmpi_exchange.invoke(trial.key, {}, EXCHANGE_WAIT_S)
            else:
                ref, exchange = getattr(handle, self.config.run).invoke(dict(e.params), trial), None
        except Exception as exc:  # nothing remote ran: e.g. params that cannot be pickled
            self._failed(e, attempt, exc, 0.0, None)
            return
        deadline = began + self.config.timeout if self.config.timeout else None
        run = _Running(e, handle, ref, attempt, began, deadline, key=trial.key, exchange=exchange,
                       last=self.last.get(e.id))
        self.running[ref.id] = run
        if exchange is not None:
            self.exchanges[exchange.id] = run

    # -- reports ----------------------------------------------------------------------------------
    def _exchanged(self, run: _Running) -> None:
        """A supervisor's long poll returned: journal its reports, decide, answer with the next poll."""
        import yrmpi

        ref, run.exchange = run.exchange, None
        try:
            items, done = yrmpi.get(ref, timeout=60)
        except Exception:  # the supervisor ended (its run's result tells how)
            return
        decisions = {}
        for item in items:
            decisions[item.get("seq", 0)] = self._on_report(run, item)
        if done or run.ref.id not in self.running:
            return
        try:
            run.exchange = run.handle._yrmpi_exchange.invoke(run.key, decisions, EXCHANGE_WAIT_S)
        except Exception:
            return
        self.exchanges[run.exchange.id] = run

    def _on_report(self, run: _Running, item: dict) -> tuple[str, str]:
        """Journal one report (append + fsync) with the scheduler's decision; the decision."""
        e = run.exp
        metrics, notes = json_safe(item.get("metrics") or {}, "metrics")
        metrics = metrics if isinstance(metrics, dict) else {"value": metrics}
        for note in notes:
            self.warn(f"warning: experiment {e.id}: {note}")
        step = item.get("step")
        step = step if isinstance(step, (int, float)) and not isinstance(step, bool) and math.isfinite(step) \
            else None
        decision, reason = "continue", ""
        if run.stopped is not None:
            decision, reason = "stop", run.stopped
        elif self.scheduler is not None and self.config.metric is not None:
            decision, reason = self.scheduler.decide(e.id, step, metrics.get(self.config.metric.name))
        checkpoint = item.get("checkpoint") if isinstance(item.get("checkpoint"), dict) else None
        record = self.journal.report(e.id, metrics, step, attempt=run.attempt, checkpoint=checkpoint,
                                     decision=decision, reason=reason)
        self._append(record)
        if self.search is not None:
            self.search.on_report(record)
        run.last = self.last[e.id] = metrics
        if checkpoint:
            self.checkpoints.setdefault(e.id, []).append({**checkpoint, "step": step})
        if decision == "stop" and run.stopped is None:
            run.stopped = reason
            self.log(f"experiment {e.id} stopped early at step {step}: {reason}")
        return decision, reason

    def _complete(self, run: _Running) -> None:
        import yrmpi

        wall = time.monotonic() - run.started
        self._drop_exchange(run)
        try:
            result = yrmpi.get(run.ref, timeout=60)
        except Exception as exc:
            if run.stopped is not None:  # stopped, then failed on the way out: still stopped
                self._append(self.journal.stopped(run.exp.id, run.last or {}, wall, reason=run.stopped))
                self._end(run.handle)
                self._told(run.exp, "stopped", run.last or {})
                return
            self._failed(run.exp, run.attempt, exc, wall, run.handle)
            return
        kind = "ok"
        if hasattr(run.handle, "_yrmpi_run") and isinstance(result, tuple) and len(result) == 2:
            kind, result = result
        if kind == "stopped" or run.stopped is not None:
            metrics = {**(run.last or {}), **(self._recordable(run.exp, result) if kind == "ok" else {})}
            self._append(self.journal.stopped(run.exp.id, metrics, wall,
                                              reason=run.stopped or str(result or "stopped")))
            self._end(run.handle)
            self._told(run.exp, "stopped", metrics)
            return
        metrics = {**(run.last or {}), **self._recordable(run.exp, result)}
        self._append(self.journal.finished(run.exp.id, metrics, wall))
        self._end(run.handle)
        self._told(run.exp, "finished", metrics)
        metric = self.config.metric
        value = metrics.get(metric.name) if metric is not None else 0.0
        if metric is not None and not _is_finite_number(value):
            shown = json_safe(value)[0]
            got = f"{metric.name}={str(shown)[:80]!r}" if metric.name in metrics else \
                f"keys: {', '.join(metrics)[:200] or 'none'}"
            self.warn(f"warning: experiment {run.exp.id}: {self.config.run}() returned no number for the metric "
                      f"{metric.name!r} ({got}); it is recorded but not ranked. Return a dict of metrics "
                      f"with {metric.name!r} in it")

    def _drop_exchange(self, run: _Running) -> None:
        if run.exchange is not None:
            self.exchanges.pop(run.exchange.id, None)
            run.exchange = None

    def _told(self, e: Experiment, status: str, metrics: dict) -> None:
        if self.on_told is not None:
            self.on_told(e, status, metrics)

    def _recordable(self, e: Experiment, result: Any) -> dict:
        """The metrics to journal: whatever `run` returned, in a form JSON always takes.

        A value JSON cannot encode (a lone surrogate from os.fsdecode, a dict that contains
        itself, an object whose repr raises) is stored in a safe form with a warning naming
        its key: nothing in a result may stop the sweep.
        """
        try:
            metrics = normalize_metrics(result, self.config.metric)
        except Exception as exc:
            self.warn(f"warning: experiment {e.id}: its result could not be read ({type(exc).__name__}); "
                      "stored as text")
            metrics = {"result": f"<unreadable {type(result).__name__}>"}
        safe, notes = json_safe(metrics, "metrics")
        for note in notes:
            self.warn(f"warning: experiment {e.id}: {note}")
        return safe if isinstance(safe, dict) else {"result": safe}

    def _failed(self, e: Experiment, attempt: int, exc: BaseException, wall: float, handle: Any) -> None:
        line, tb = describe_error(exc)
        failures = self.failures.get(e.id, 0) + 1
        self.failures[e.id] = failures
        for run in [r for r in self.running.values() if r.exp.id == e.id]:
            self._drop_exchange(run)
        self._append(self.journal.failed(e.id, line, tb, wall=wall))
        if handle is not None:
            self._end(handle)
        self._replan()
        if failures <= self.config.retries:
            self._append(self.journal.retried(e.id, attempt=attempt + 1, reason=line))
            self.queue.append(e)
            self.log(f"experiment {e.id} failed (attempt {attempt}): {line}; retry {failures} of "
                     f"{self.config.retries}")
        else:
            tries = f"after {failures} attempts" if failures > 1 else "(retries: 0)"
            self.log(f"experiment {e.id} failed {tries}: {line}")
            self._told(e, "failed", {})

    def _replan(self) -> None:
        """After a failure: if ranks died (ULFM reports them), fit concurrency to the ranks left
        rather than let new supervisors wait for room that will never come back."""
        import yrmpi

        if self.ranks is None:
            return
        try:
            ranks = ranks_from_usage(yrmpi.resources())
        except Exception:  # the scheduler did not answer: keep the plan we have
            return
        if len(ranks) >= len(self.ranks):
            return
        lost = len(self.ranks) - len(ranks)
        self.ranks = ranks
        try:
            self.plan = plan_capacity(self.config, ranks, max(len(self.queue) + len(self.running), 1))
        except SweepConfigError as exc:
            self.out_of_ranks = True
            self.log(f"{lost} host rank(s) lost; no experiment fits on the {len(ranks)} left ({exc}); "
                     "starting no more experiments")
            return
        at_once = self.plan.concurrency
        self.log(f"{lost} host rank(s) lost; now {at_once} experiment{'s' if at_once != 1 else ''} at once")

    def _end(self, handle: Any) -> None:
        """End a supervisor and, with it, its workers: their ranks go to the next experiment."""
        try:
            handle.terminate()
        except Exception as exc:  # already gone: nothing to free
            self.warn(f"note: ending a supervisor raised {type(exc).__name__}: {exc}")

    def _expire(self, now: float) -> None:
        for key, run in list(self.running.items()):
            if run.deadline is not None and now >= run.deadline:
                del self.running[key]
                exc = TimeoutError(f"the experiment ran longer than timeout={self.config.timeout:g} s; "
                                   "its supervisor and workers were ended")
                self._failed(run.exp, run.attempt, exc, now - run.started, run.handle)

    def _fill(self) -> None:
        while len(self.running) < self.plan.concurrency:
            if not self.queue and self.search is not None:
                asked = self.search.ask(self.journal)
                if asked is not None:
                    e, record = asked
                    self._append(record)
                    self.experiments.append(e)
                    self.known.add(e.id)
                    self.queue.append(e)
            if not self.queue:
                break
            self._start(self.queue.popleft())

    # -- the loop ---------------------------------------------------------------------------------
    def status(self) -> str:
        states = {i: s for i, s in fold(self.records).items() if i in self.known}
        try:
            write_curves(self.journal.directory, self.records, self.experiments)
        except OSError as exc:
            self.warn(f"warning: {CURVES_CSV} not written: {exc}")
        total = max(self.config.total, len(self.experiments))
        line = status_line(states, total, self.started_at, time.time(), self.config.metric,
                           concurrency=self.plan.concurrency, name=self.config.name)
        return line + (f" | stopping ({self.stopped_by})" if self.stopped_by else "")

    def _check_launcher(self) -> None:
        """A driver whose launcher died (mpiexec killed) must not keep writing the journal that
        the next run resumes from."""
        if os.getppid() != self._ppid:
            print("yrmpi sweep: the launcher of this job is gone; stopping at once", file=sys.stderr, flush=True)
            os._exit(EXIT_LOST)

    def run(self) -> bool:
        """Run until every experiment ended, or until a stop signal's grace period is over.
        True when something is left to do (interrupted)."""
        import yrmpi

        interval = self.config.status_interval
        next_status = time.monotonic() + interval
        stop_at: float | None = None
        while True:
            now = time.monotonic()
            if self.out_of_ranks and stop_at is None and not self.stop.count:
                self.stop.count, self.stop.name = 1, "lost ranks"
            if self.stop.count and stop_at is None:
                self.stopped_by = self.stop.name or "signal"
                stop_at = now + self.config.grace_period
                self.log(f"{self.stopped_by}: starting no more experiments; {len(self.running)} running get up to "
                         f"{self.config.grace_period:g} s to finish (send it again to stop at once)")
            if self.stop.count > 1 and stop_at is not None and stop_at > now:
                stop_at = now
            if stop_at is None:
                self._fill()
            if not self.running or (stop_at is not None and now >= stop_at):
                break
            self._check_launcher()
            until = min([next_status, now + POLL_S, *(r.deadline for r in self.running.values() if r.deadline),
                         *([stop_at] if stop_at is not None else [])])
            refs = [r.ref for r in self.running.values()]
            refs += [r.exchange for r in self.running.values() if r.exchange is not None]
            ready, _ = yrmpi.wait(refs, wait_num=1, timeout=max(until - now, 0.001))
            for ref in sorted(ready, key=lambda ref: ref.id not in self.exchanges):  # reports first
                polled = self.exchanges.pop(ref.id, None)
                if polled is not None:
                    if polled.exchange is ref:
                        self._exchanged(polled)
                    continue
                run = self.running.pop(ref.id, None)
                if run is not None:
                    self._complete(run)
            now = time.monotonic()
            self._expire(now)
            if now >= next_status:
                self._replan()  # a rank may have died after the failure it caused was reported
                self.log(self.status())
                next_status = now + interval
        reason = f"{self.stopped_by}: not finished within grace_period={self.config.grace_period:g} s"
        for run in list(self.running.values()):
            self._drop_exchange(run)
            self._append(self.journal.interrupted(run.exp.id, reason=reason, wall=time.monotonic() - run.started))
            self._end(run.handle)
        left = bool(self.running or self.queue or (self.search is not None and self.search.left))
        self.running.clear()
        self.log(self.status())
        return left


# -- the end --------------------------------------------------------------------------------------
def exit_code(config: SweepConfig, experiments: Sequence[Experiment], records: Sequence[dict]) -> int:
    """EXIT_OK when every experiment finished, EXIT_FAILED when the rest failed for good,
    EXIT_INTERRUPTED when some are still to run."""
    if config.search:
        experiments = experiments_of(config, records)
        if len(experiments) < config.total:
            return EXIT_INTERRUPTED
    states = fold(records)
    todo = resume_plan(experiments, states, config.retries)
    if todo:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if any(states[e.id].status == "failed" for e in experiments) else EXIT_OK


def summarize(config: SweepConfig, experiments: Sequence[Experiment], out: Path, records: Sequence[dict],
              log: Callable[[str], None] = _log) -> int:
    """Write results.csv, summary.json (and the plot), print the ranked table; the exit code."""
    known = {e.id for e in experiments}
    states = {i: s for i, s in fold(records).items() if i in known}
    _write_results(out, experiments, states, config.metric, name=config.name)
    png = plot(out, experiments, states, config.metric)
    curves = write_curves(out, records, experiments)
    curves_png = plot_curves(out, records, experiments, config.metric) if curves else None
    log("")
    log(report(out))
    files = [out / RESULTS_CSV, out / SUMMARY_JSON, *(f for f in (png, curves, curves_png) if f)]
    log("results: " + ", ".join(str(f) for f in files))
    code = exit_code(config, experiments, records)
    if code == EXIT_INTERRUPTED:
        left = work_left(config, experiments, resume_plan(experiments, fold(records), config.retries))
        log(f"stopped with {left} experiment{'s' if left != 1 else ''} left; run the same command again to "
            f"resume (exit code {EXIT_INTERRUPTED})")
    elif code == EXIT_FAILED:
        failed = sum(1 for s in states.values() if s.status == "failed")
        log(f"{failed} experiment{'s' if failed != 1 else ''} failed; their errors are in the table, "
            f"{SUMMARY_JSON} and the journal (exit code {EXIT_FAILED})")
    return code


def plan_text(config: SweepConfig, experiments: Sequence[Experiment], todo: Sequence[Experiment],
              plan: CapacityPlan, max_rows: int | None = 50) -> str:
    """The plan of what is left to run (the table only up to `max_rows` experiments)."""
    lines = format_plan(config, todo, plan).splitlines()
    if len(todo) != len(experiments):
        lines[0] = lines[0].replace(f": {len(todo)} experiments (",
                                    f": {len(todo)} of {len(experiments)} experiments left to run (", 1)
    if max_rows is not None and len(todo) > max_rows:
        lines = lines[:2] + [f"({len(todo)} experiments; --dry-run prints them all)"]
    return "\n".join(lines)


def _world_note(ranks: Sequence[RankCapacity]) -> str:
    return f"{len(ranks) + 1} ranks (1 driver + {len(ranks)} host ranks)"


def drive(opts: SweepOptions, stop: StopRequest | None = None) -> int:
    """Rank 0 of `python -m yrmpi sweep FILE.yaml`: plan on the ranks there are, run, summarize.

    Every way out is one of the exit codes: bad input (2) is one line on stderr, an output
    folder that fails during the run (a full disk) is EXIT_OUTPUT with one line; the journal
    stays consistent either way, so a rerun resumes.
    """
    stop = stop or StopRequest()
    stop.install()
    try:
        config = load_config(opts)
        experiments = sweep_experiments(config, fresh_requested(opts))
        lock = open_output(config, experiments, opts)
    except SweepConfigError as exc:
        print(exc, file=sys.stderr, flush=True)
        return EXIT_CONFIG
    try:
        return _drive(config, experiments, opts, stop)
    except SweepConfigError as exc:
        print(exc, file=sys.stderr, flush=True)
        return EXIT_CONFIG
    except OSError as exc:  # the disk filled up, the folder went read-only, ...
        print(f"yrmpi sweep: {output_error(Path(config.output).absolute(), exc, 'write to')}; "
              f"stopping (exit code {EXIT_OUTPUT}); the journal holds every result so far", file=sys.stderr,
              flush=True)
        return EXIT_OUTPUT
    finally:
        lock.release()


def _drive(config: SweepConfig, experiments: list[Experiment], opts: SweepOptions, stop: StopRequest) -> int:
    import yrmpi

    out, records, warnings = prepare_output(config, opts)
    for warning in warnings:
        _warn(f"warning: {warning}")
    check_fingerprint(out, config.to_dict(), records)
    if config.search:
        from .search import OptunaSearch

        experiments = experiments_of(config, records)
        search = OptunaSearch(config, records)
    else:
        search = None
    states = fold(records)
    todo = resume_plan(experiments, states, config.retries)
    yrmpi.init()
    ranks = ranks_from_usage(yrmpi.resources())
    _check_rank_count(len(ranks) + 1, "the job")
    plan = plan_capacity(config, ranks, max(work_left(config, experiments, todo), 1))
    creator = _supervisor_creator(config)
    known = {e.id for e in experiments}
    done = sum(1 for i, s in states.items() if i in known and s.status == "finished")
    failed = len(experiments) - done - len(todo)
    _log(plan_text(config, experiments, todo, plan))
    _log(f"on {_world_note(ranks)}; output {out}")
    if records:
        _log(f"resuming: {done} finished, {failed} failed for good, {len(todo)} to run")
    elif opts.resume:
        _log(f"--resume: no journal in {out} yet; starting from the beginning")
    journal = Journal(out)
    records = list(records)
    if not any(r.get("event") == SWEEP_EVENT for r in records):
        records.append(journal.sweep(config.to_dict()))
    write_resolved_config(out, config.to_dict())
    records += journal.queued_many([e for e in experiments if e.id not in states])
    for e in experiments:
        st = states.get(e.id)
        if st is not None and st.status == "running":  # the previous run died with it running
            records.append(journal.interrupted(e.id, reason="the previous run ended without a result (killed?)"))
    runner = SweepRunner(config, experiments, todo, plan, journal, records, stop, ranks=ranks, creator=creator,
                         search=search)
    runner.run()
    return summarize(config, runner.experiments, out, runner.records)


def dry_run_ranks() -> int | None:
    """World size when launched by mpiexec/srun (for --dry-run under a launcher)."""
    for name in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "SLURM_NTASKS"):
        raw = os.environ.get(name)
        if raw and raw.isdigit():
            return int(raw)
    return None
