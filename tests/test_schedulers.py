"""Median stopping and ASHA against hand-worked examples, and the same decisions after a replay."""

from __future__ import annotations

import numpy as np
import pytest

from yrmpi.sweep import Journal, read_journal
from yrmpi.sweep.schedulers import ASHA, MedianStopping, make_scheduler, replay


def decisions(scheduler, reports):
    return [scheduler.decide(exp, step, value)[0] for exp, step, value in reports]


# ASHA, mode min, grace 1, reduction factor 2, max_t 4: rungs at 4, 2, 1.
ASHA_REPORTS = [
    ("A", 1, 1.0),  # rung 1 empty: continue; rung 1 = {A: -1}
    ("B", 1, 2.0),  # cutoff = 50th percentile of [-1] = -1; reward -2 < -1: stop
    ("C", 1, 0.5),  # cutoff of [-2, -1] = -1.5; -0.5 >= -1.5: continue
    ("D", 1, 1.8),  # cutoff of [-2, -1, -0.5] = -1; -1.8 < -1: stop
    ("A", 2, 0.9),  # rung 2 empty: continue
    ("C", 2, 0.4),  # cutoff of [-0.9] = -0.9; -0.4 >= -0.9: continue
    ("A", 3, 0.8),  # no new rung between 2 and 4: continue
    ("E", 2, 0.95),  # reaches rung 2 first (highest rung it reached): cutoff of [-0.9, -0.4] = -0.65: stop
    ("C", 4, 0.3),  # rung 4 empty: continue
    ("A", 4, 0.35),  # cutoff of [-0.3] = -0.3; -0.35 < -0.3: stop
    ("A", 4, 0.35),  # the same step again (a resumed experiment redoes it): recorded once, continue
]
ASHA_WANT = ["continue", "stop", "continue", "stop", "continue", "continue", "continue", "stop", "continue",
             "stop", "continue"]


def test_asha_matches_the_hand_worked_example() -> None:
    asha = ASHA("min", max_t=4, grace_period=1, reduction_factor=2)
    assert [m for m, _ in asha.rungs] == [4, 2, 1]
    assert decisions(asha, ASHA_REPORTS) == ASHA_WANT


def test_asha_cutoff_is_numpys_linear_percentile() -> None:
    asha = ASHA("max", max_t=27, grace_period=1, reduction_factor=3)
    values = {str(i): v for i, v in enumerate([0.3, -1.0, 2.5, 7.0, 0.0, 1.25])}
    assert asha.cutoff(values) == pytest.approx(np.percentile(list(values.values()), (1 - 1 / 3) * 100))
    assert [m for m, _ in asha.rungs] == [27, 9, 3, 1]


def test_asha_mode_max_is_mode_min_mirrored() -> None:
    mirrored = [(exp, step, -value) for exp, step, value in ASHA_REPORTS]
    assert decisions(ASHA("max", 4, 1, 2), mirrored) == ASHA_WANT


# Median, mode min, grace 2, min_samples 2.
MEDIAN_REPORTS = [
    ("A", 1, 1.0), ("B", 1, 2.0), ("C", 1, 3.0),  # step 1 < grace: continue
    ("A", 2, 0.8),  # no others at step 2
    ("B", 2, 1.5),  # one other (< min_samples)
    ("C", 2, 2.0),  # others [0.8, 1.5]: median 1.15, 2.0 is worse: stop
    ("D", 2, 1.0),  # others [0.8, 1.5, 2.0]: median 1.5, 1.0 is better: continue
    ("B", 2, 1.5),  # a redone step: decided the first time, continue
    ("D", 3, None),  # no metric in the report: never compared
    ("E", 2, float("nan")),  # not a number: continue
]
MEDIAN_WANT = ["continue"] * 5 + ["stop"] + ["continue"] * 4


def test_median_rule_matches_the_hand_worked_example() -> None:
    assert decisions(MedianStopping("min", grace_period=2, min_samples=2), MEDIAN_REPORTS) == MEDIAN_WANT
    mirrored = [(e, s, None if v is None else -v) for e, s, v in MEDIAN_REPORTS]
    assert decisions(MedianStopping("max", grace_period=2, min_samples=2), mirrored) == MEDIAN_WANT


@pytest.mark.parametrize("spec, reports, want", [
    ({"type": "asha", "max_t": 4, "grace_period": 1, "reduction_factor": 2}, ASHA_REPORTS, ASHA_WANT),
    ({"type": "median", "grace_period": 2, "min_samples": 2}, MEDIAN_REPORTS, MEDIAN_WANT),
])
def test_a_resume_replays_the_journal_to_the_same_decisions(tmp_path, spec, reports, want) -> None:
    """Journal the first half as the runner does, replay it into a fresh scheduler (a resumed
    sweep), and the second half decides as an uninterrupted scheduler does."""
    live = make_scheduler(spec, "min")
    journal = Journal(tmp_path)
    half = len(reports) // 2
    for exp, step, value in reports[:half]:
        decision, reason = live.decide(exp, step, value)
        journal.report(exp, {"loss": value}, step, attempt=1, decision=decision, reason=reason)
    records, warnings = read_journal(tmp_path)
    assert not warnings and [r["decision"] for r in records] == want[:half]
    resumed = make_scheduler(spec, "min")
    assert replay(resumed, records, "loss") == 0
    assert decisions(resumed, reports[half:]) == want[half:]


def test_a_replay_with_another_scheduler_counts_the_differences(tmp_path) -> None:
    journal = Journal(tmp_path)
    for exp, step, value in ASHA_REPORTS:
        journal.report(exp, {"loss": value}, step, decision="continue")
    records, _ = read_journal(tmp_path)
    assert replay(ASHA("min", 4, 1, 2), records, "loss") == ASHA_WANT.count("stop")


def test_stopped_experiments_fold_as_stopped_and_are_never_rerun(tmp_path) -> None:
    from yrmpi.sweep import Experiment, fold, resume_plan

    journal = Journal(tmp_path)
    journal.started("a", attempt=1)
    journal.report("a", {"loss": 2.0}, 1, attempt=1, checkpoint={"file": "step-1.pkl", "kind": "pickle"})
    journal.report("a", {"loss": 3.0}, 2, attempt=1, decision="stop", reason="asha")  # killed before "stopped"
    journal.started("b", attempt=1)
    journal.report("b", {"loss": 1.0}, 1, attempt=1)
    records, warnings = read_journal(tmp_path)
    assert not warnings
    states = fold(records)
    assert states["a"].status == "stopped" and states["a"].metrics == {"loss": 3.0}
    assert states["a"].checkpoint == {"file": "step-1.pkl", "kind": "pickle", "step": 1}
    assert states["b"].status == "running" and states["b"].step == 1
    todo = resume_plan([Experiment("a", {}, 0, 0), Experiment("b", {}, 0, 1)], states, retries=0)
    assert [e.id for e in todo] == ["b"]
