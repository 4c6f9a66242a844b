"""`python -m yrmpi.slurm job.py [args]`: the entry slurm/job.sbatch runs on every rank for a plain job script."""

from __future__ import annotations

import logging
import signal
import sys

from .. import launch

__all__ = ["job_main"]

log = logging.getLogger("yrmpi")


def job_main(argv: list[str]) -> int:
    """`python -m yrmpi.slurm job.py [args]`: `python -m yrmpi job.py` with SIGUSR1 made safe.

    The batch script passes Slurm's warning (SIGUSR1) to every rank. Python's default for it is
    to die, so host ranks ignore it, and rank 0 gets a handler that only logs; a job script that
    wants the warning installs its own handler (e.g. checkpoint, then sys.exit(75) to be requeued).
    """
    from ..api.spmd import run_script

    if not argv:
        print("usage: python -m yrmpi.slurm job.py [args]   (inside mpiexec/srun, as slurm/job.sbatch does)",
              file=sys.stderr)
        return 2
    if launch.launcher_rank() != 0:
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    else:
        def note(_signum: int, _frame: object) -> None:
            log.warning("yrmpi: SIGUSR1 (Slurm's time-limit warning); this job script installs no handler for it, "
                        "so it runs on until the limit")

        signal.signal(signal.SIGUSR1, note)
    return run_script(argv[0], argv[1:])
