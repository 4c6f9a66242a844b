"""``search: {type: optuna, sampler: tpe, trials: N, seed: S}``: Optuna's ask-and-tell on rank 0.

The study lives on rank 0 beside the journal.  A trial is asked when a slot is free (so
``max_concurrent`` holds), and journaled at once as a ``queued`` line with its params and
its number (``trial``) before it starts; it is told when its experiment ends: finished
(its metric), stopped by the scheduler (pruned, with the values it reported) or failed for
good.  A resume rebuilds the study from the journal: every journaled trial that ended is
added with its outcome, every journaled trial that had not ended runs again with the same
params (never asked again), and only the trials never journaled are asked.  So no trial is
asked twice or lost, however often the job is killed.

Optuna is an optional extra (``pip install yrmpi[search]``), imported only here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from .config import Constant, Distribution, Experiment, Grid, SweepConfig, SweepConfigError, experiment_id
from .journal import DONE, Journal, fold

__all__ = ["OptunaSearch", "distributions", "require_optuna"]

logger = logging.getLogger("yrmpi")


def require_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise SweepConfigError("search: found type optuna, but optuna is not installed, expected it installed: "
                               "pip install 'yrmpi[search]' (or pip install optuna)") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def distributions(config: SweepConfig) -> tuple[dict, dict]:
    """(Optuna distributions of the searched params, constants): lists and ``choice`` are
    categorical, ``loguniform``/``uniform`` floats, ``randint`` ints (both ends included)."""
    optuna = require_optuna()
    dists, constants = {}, {}
    for name, p in config.params.items():
        if isinstance(p, Constant):
            constants[name] = p.value
        elif isinstance(p, Grid) or p.kind == "choice":
            options = p.values if isinstance(p, Grid) else p.args
            if not all(o is None or isinstance(o, (bool, int, float, str)) for o in options):
                raise SweepConfigError(f"{config.source}: params.{name}: found a list or mapping among the options, "
                                       "expected strings, numbers, booleans or null with search: optuna")
            dists[name] = optuna.distributions.CategoricalDistribution(list(options))
        elif isinstance(p, Distribution) and p.kind == "randint":
            dists[name] = optuna.distributions.IntDistribution(p.args[0], p.args[1])
        else:
            dists[name] = optuna.distributions.FloatDistribution(p.args[0], p.args[1], log=p.kind == "loguniform")
    return dists, constants


def _value(metrics: Mapping[str, Any] | None, name: str) -> float | None:
    v = (metrics or {}).get(name)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v in (float("inf"), float("-inf")):
        return None
    return float(v)


class OptunaSearch:
    """The study of one sweep, rebuilt from its journal records."""

    def __init__(self, config: SweepConfig, records: Sequence[Mapping[str, Any]]) -> None:
        optuna = require_optuna()
        assert config.search is not None and config.metric is not None
        self.optuna = optuna
        self.config = config
        self.metric = config.metric
        self.trials = int(config.search["trials"])
        seed = config.search.get("seed", 0)
        sampler = (optuna.samplers.TPESampler(seed=seed) if config.search.get("sampler", "tpe") == "tpe"
                   else optuna.samplers.RandomSampler(seed=seed))
        self.study = optuna.create_study(direction="minimize" if self.metric.mode == "min" else "maximize",
                                         sampler=sampler)
        self.dists, self.constants = distributions(config)
        self.live: dict[str, Any] = {}  # experiment id -> the optuna trial asked in this run
        self.numbers: dict[str, int] = {}  # experiment id -> trial number in the journal
        self.asked = 0
        states = fold(records)
        self.reports: dict[str, dict[float, float]] = {}
        for r in records:
            if r.get("event") == "queued" and isinstance(r.get("trial"), int) and r.get("exp") not in self.numbers:
                self.numbers[r["exp"]] = r["trial"]
                self.asked = max(self.asked, r["trial"] + 1)
            elif r.get("event") == "report":
                self._note_report(r)
        params = {r["exp"]: r["params"] for r in records
                  if r.get("event") == "queued" and r.get("exp") in self.numbers and isinstance(r.get("params"), dict)}
        for exp in sorted(self.numbers, key=self.numbers.get):
            st = states.get(exp)
            if st is not None and (st.status in DONE or st.status == "failed" and st.failures > config.retries):
                self._add(exp, params.get(exp, {}), st.status, st.metrics)

    def _note_report(self, r: Mapping[str, Any]) -> None:
        step, value = r.get("step"), _value(r.get("metrics"), self.metric.name)
        if isinstance(step, (int, float)) and not isinstance(step, bool) and value is not None:
            self.reports.setdefault(r["exp"], {}).setdefault(step, value)

    def _searched(self, params: Mapping[str, Any]) -> dict:
        return {k: v for k, v in params.items() if k in self.dists}

    def _add(self, exp: str, params: Mapping[str, Any], status: str, metrics: Mapping[str, Any] | None) -> None:
        """A trial of an earlier run that ended: into the study with its outcome."""
        TrialState = self.optuna.trial.TrialState
        value = _value(metrics, self.metric.name)
        steps = {int(s): v for s, v in self.reports.get(exp, {}).items()}
        if status == "finished" and value is not None:
            state, kept = TrialState.COMPLETE, value
        elif status == "stopped":
            state, kept = TrialState.PRUNED, None
        else:
            state, kept = TrialState.FAIL, None
        try:
            self.study.add_trial(self.optuna.trial.create_trial(
                params=self._searched(params), distributions=self.dists, value=kept, state=state,
                intermediate_values=steps))
        except Exception as exc:  # params outside the space (a changed file): leave it out of the study
            logger.warning("warning: experiment %s not added to the Optuna study: %s", exp, exc)

    @property
    def left(self) -> int:
        """Trials still to ask."""
        return max(self.trials - self.asked, 0)

    def ask(self, journal: Journal) -> tuple[Experiment, dict] | None:
        """Ask the next trial, journal it as queued (before it starts); (experiment, record)."""
        if self.left <= 0:
            return None
        trial = self.study.ask(self.dists)
        number = self.asked
        self.asked += 1
        params = {**{k: trial.params[k] for k in self.config.params if k in trial.params},
                  **self.constants}
        params = {k: params[k] for k in self.config.params if k in params}
        seed = self.config.seeds[0]
        eid = experiment_id({"optuna_trial": number, **params}, seed)
        e = Experiment(eid, params, seed, number)
        record = journal.append("queued", eid, params=params, seed=seed, index=number, trial=number)
        self.live[eid] = trial
        self.numbers[eid] = number
        return e, record

    def on_report(self, record: Mapping[str, Any]) -> None:
        self._note_report(record)

    def tell(self, e: Experiment, status: str, metrics: Mapping[str, Any]) -> None:
        """An experiment ended for good: tell the study (or add it, when it was asked before a resume)."""
        trial = self.live.pop(e.id, None)
        if trial is None:
            self._add(e.id, e.params, status, metrics)
            return
        TrialState = self.optuna.trial.TrialState
        value = _value(metrics, self.metric.name)
        try:
            for step, v in sorted(self.reports.get(e.id, {}).items()):
                trial.report(v, int(step))
            if status == "finished" and value is not None:
                self.study.tell(trial, value)
            elif status == "stopped":
                self.study.tell(trial, state=TrialState.PRUNED)
            else:
                self.study.tell(trial, state=TrialState.FAIL)
        except Exception as exc:
            logger.warning("warning: the Optuna study did not take experiment %s: %s", e.id, exc)
