"""``yrmpi sweep file.yaml``: config, capacity plan, journal, report, and the runner.

config, plan, journal and report are pure (no MPI, no runtime); the runner composes them:
``load`` -> ``expand`` -> ``plan_capacity``/``format_plan`` -> ``Journal`` appends while
experiments run -> ``fold``/``resume_plan`` on restart -> ``status_line``, ``ranked_table``,
``write_results``, ``plot``; ``report(folder)`` at any time.  See docs/sweeps.md.

The runner (runner.py, rank 0 of an MPI job) and the commands (cli.py) put them to work;
supervisors receive a :class:`Trial` with each experiment: ``run(params, trial)``.
"""

from .config import (
    DISTRIBUTIONS,
    TOP_KEYS,
    Constant,
    Distribution,
    Experiment,
    Grid,
    Metric,
    Resources,
    SweepConfig,
    SweepConfigError,
    apply_overrides,
    expand,
    expand_env,
    experiment_id,
    import_entry,
    load,
    load_dict,
    parse_yaml,
)
from .journal import (
    CONFIG_NAME,
    EVENTS,
    FINGERPRINT_KEYS,
    JOURNAL_NAME,
    ExperimentState,
    Journal,
    check_fingerprint,
    fold,
    json_safe,
    read_journal,
    resume_plan,
    write_resolved_config,
)
from .output import LOCK_NAME, SweepLock, check_output
from .plan import CapacityPlan, experiment_demands, format_plan, plan_capacity, ranks_from_usage
from .report import (
    best,
    metric_value,
    normalize_metrics,
    plot,
    rank,
    ranked_table,
    report,
    status_line,
    write_results,
)
from .runner import EXIT_CONFIG, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_LOST, EXIT_OK, EXIT_OUTPUT
from .trial import Trial, TrialStopped

__all__ = [
    "CONFIG_NAME",
    "DISTRIBUTIONS",
    "EVENTS",
    "EXIT_CONFIG",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_LOST",
    "EXIT_OK",
    "EXIT_OUTPUT",
    "FINGERPRINT_KEYS",
    "JOURNAL_NAME",
    "LOCK_NAME",
    "TOP_KEYS",
    "CapacityPlan",
    "Constant",
    "Distribution",
    "Experiment",
    "ExperimentState",
    "Grid",
    "Journal",
    "Metric",
    "Resources",
    "SweepConfig",
    "SweepConfigError",
    "SweepLock",
    "Trial",
    "TrialStopped",
    "apply_overrides",
    "best",
    "check_fingerprint",
    "check_output",
    "expand",
    "expand_env",
    "experiment_demands",
    "experiment_id",
    "fold",
    "format_plan",
    "import_entry",
    "json_safe",
    "load",
    "load_dict",
    "metric_value",
    "normalize_metrics",
    "parse_yaml",
    "plan_capacity",
    "plot",
    "rank",
    "ranked_table",
    "ranks_from_usage",
    "read_journal",
    "report",
    "resume_plan",
    "status_line",
    "write_resolved_config",
    "write_results",
]
