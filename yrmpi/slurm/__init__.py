"""Slurm batch scripts for yrmpi: `yrmpi slurm FILE.yaml` sizes a sweep and writes (or submits) its script.

Kept in its own corner: the runtime never imports this package. Everything Slurm-specific that
happens at run time lives in the bash of the generated script (and of slurm/*.sbatch), so a
user can read and edit it: per-rank capacity from the allocation, the launcher line, passing
Slurm's warning signal to rank 0, and requeueing when the sweep exits with EXIT_INTERRUPTED.
`python -m yrmpi.slurm job.py` is the entry that slurm/job.sbatch uses for plain job scripts.
See docs/slurm.md.

- errors: SlurmError;
- templates: the bash blocks every script contains (capacity, launcher detection, run/requeue);
- launcher: the concrete mpiexec or srun line of a generated script;
- timelimit: --time values and the warning lead;
- sizing: ranks and memory for a sweep, from its capacity plan;
- render: the text of a sweep's batch script;
- sbatch: submitting it;
- command: `yrmpi slurm` (argument parsing, the steps above);
- job: `python -m yrmpi.slurm job.py`, run on every rank of a plain batch job.
"""

from __future__ import annotations

from ..launch import EXIT_INTERRUPTED
from .command import slurm_command
from .errors import SlurmError
from .job import job_main
from .launcher import LAUNCHERS, launcher_line
from .render import render_sweep
from .sbatch import submit
from .sizing import AUTO_MEM_CAP_MB, Sizing, size_sweep
from .templates import CAPACITY_BLOCK, DETECT_BLOCK, RUN_BLOCK
from .timelimit import DEFAULT_TIME, SIGNAL_LEAD_S, WARNING_SLACK_S, parse_time, signal_lead

__all__ = [
    "AUTO_MEM_CAP_MB", "CAPACITY_BLOCK", "DEFAULT_TIME", "DETECT_BLOCK", "EXIT_INTERRUPTED", "LAUNCHERS",
    "RUN_BLOCK", "SIGNAL_LEAD_S", "WARNING_SLACK_S", "SlurmError", "Sizing", "job_main", "launcher_line",
    "parse_time", "render_sweep", "signal_lead", "size_sweep", "slurm_command", "submit",
]
