"""Optuna search: ask-and-tell on rank 0, the study rebuilt from the journal on resume."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml

optuna = pytest.importorskip("optuna")

from yrmpi.sweep import Journal, fold, load_dict, read_journal, resume_plan  # noqa: E402
from yrmpi.sweep.journal import experiments_of  # noqa: E402
from yrmpi.sweep.search import OptunaSearch  # noqa: E402

DOC = {
    "name": "opt", "entry": "x.py:C", "run": "run",
    "params": {"lr": {"loguniform": [1e-4, 1.0]}, "width": [16, 32], "layers": {"randint": [1, 4]}, "epochs": 5},
    "metric": {"name": "loss", "mode": "min"},
    "search": {"type": "optuna", "sampler": "tpe", "trials": 6, "seed": 3},
}


def config(tmp_path: Path, **changes):
    return load_dict({**DOC, "output": str(tmp_path), **changes}, check_entry=False)


def test_the_study_is_rebuilt_from_the_journal_so_no_trial_is_asked_twice_or_lost(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    journal = Journal(tmp_path)
    search = OptunaSearch(cfg, [])
    asked = [search.ask(journal)[0] for _ in range(4)]
    assert [e.index for e in asked] == [0, 1, 2, 3] and search.left == 2
    assert all(set(e.params) == {"lr", "width", "layers", "epochs"} and e.params["epochs"] == 5 for e in asked)
    assert all(1e-4 <= e.params["lr"] <= 1.0 and e.params["width"] in (16, 32) for e in asked)
    journal.started(asked[0].id, attempt=1)
    journal.finished(asked[0].id, {"loss": 0.5}, wall=1.0)
    journal.started(asked[1].id, attempt=1)
    journal.report(asked[1].id, {"loss": 2.0}, 1, decision="stop", reason="asha")
    journal.started(asked[2].id, attempt=1)  # running when the job died
    records, warnings = read_journal(tmp_path)
    assert not warnings

    resumed = OptunaSearch(cfg, records)  # a resume
    assert resumed.asked == 4 and resumed.left == 2
    states = {t.number: t.state for t in resumed.study.trials}
    assert sorted(s.name for s in states.values()) == ["COMPLETE", "PRUNED"]
    experiments = experiments_of(cfg, records)
    assert [e.id for e in experiments] == [e.id for e in asked]
    todo = resume_plan(experiments, fold(records), cfg.retries)
    assert [e.id for e in todo] == [asked[2].id, asked[3].id]  # run again with their params, not asked again
    more = [resumed.ask(journal)[0] for _ in range(3) if resumed.left]
    assert [e.index for e in more] == [4, 5] and resumed.ask(journal) is None
    resumed.tell(todo[0], "finished", {"loss": 0.25})  # asked before the resume: added with its outcome
    resumed.tell(more[0], "stopped", {"loss": 3.0})
    assert Counter(t.state.name for t in resumed.study.trials) == Counter({"COMPLETE": 2, "PRUNED": 2, "RUNNING": 1})
    records, _ = read_journal(tmp_path)
    queued = [r for r in records if r["event"] == "queued"]
    assert [r["trial"] for r in queued] == [0, 1, 2, 3, 4, 5] and len({r["exp"] for r in queued}) == 6


def test_search_keys_are_validated_in_one_line_each(tmp_path: Path) -> None:
    from yrmpi.sweep import SweepConfigError

    with pytest.raises(SweepConfigError) as err:
        config(tmp_path, search={"type": "optuna", "sampler": "cmaes", "trails": 3})
    text = "\n".join(err.value.problems)
    assert 'search.sampler: found string "cmaes", expected tpe or random' in text
    assert "search.trails: found unknown key 'trails'" in text and "did you mean 'trials'" in text
    assert "search.trials: found nothing (key is missing), expected how many trials to ask" in text
    with pytest.raises(SweepConfigError, match="scheduler.max_t"):
        config(tmp_path, scheduler={"type": "asha"})
    cfg = config(tmp_path, scheduler="median")
    assert cfg.scheduler == {"type": "median", "grace_period": 1, "min_samples": 3}
    assert yaml.safe_load(yaml.safe_dump(cfg.to_dict()))["search"]["trials"] == 6


@pytest.mark.mpi
def test_an_optuna_sweep_killed_mid_run_asks_every_trial_once(tmp_path: Path) -> None:
    import test_trials
    from conftest import run_yrmpi
    from test_sweep_run import events, journal, kill_tree, start_sweep, wait_for

    path = test_trials.make_sweep(tmp_path, [0.1], epochs=8, params={"lr": {"loguniform": [1e-3, 0.3]}, "epochs": 8},
                                  search={"type": "optuna", "sampler": "tpe", "trials": 8, "seed": 1},
                                  scheduler={"type": "asha", "max_t": 8, "grace_period": 2, "reduction_factor": 2})
    out = tmp_path / "out"
    proc = start_sweep(path, tmp_path, "first", TRIAL_SLEEP="0.05")
    wait_for(lambda: len([r for r in journal(out) if r["event"] == "queued"]) >= 3, "three trials asked", proc)
    kill_tree(proc)
    done = run_yrmpi(["sweep", str(path)], env=None)
    assert done.returncode == 0, done.stdout + done.stderr
    records = journal(out)
    queued = [r for r in records if r["event"] == "queued"]
    assert sorted(r["trial"] for r in queued) == list(range(8)) and len({r["exp"] for r in queued}) == 8
    ended = events(records, "finished") + events(records, "stopped")
    assert ended == Counter({r["exp"]: 1 for r in queued})
