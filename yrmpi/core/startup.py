"""What a process learns from how it was started, before anything heavy is imported.

- `under_mpi()`: was this process started by an MPI launcher (or srun)? Then it is a rank.
- A stop signal (SIGTERM, SIGUSR1) that reaches the `yrmpi` command itself while it starts
  up (importing numpy and mpi4py takes a second or more) is held, not fatal: the command
  then ends with "stopped with work left" (75) instead of dying of the signal half-started,
  and a signal that comes later, while the job runs, is passed on as usual (launch/process.py).
  Ranks and user programs that import yrmpi keep Python's default handling.
"""

from __future__ import annotations

import os
import signal
import sys

# Set by the launchers people use: Open MPI, MPICH/Hydra, PMIx (srun --mpi=pmix), Slurm steps.
LAUNCHER_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMI_RANK", "PMIX_RANK", "PMI_FD",
                 "SLURM_STEP_ID", "YRMPI_LAUNCHED")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

_held: list[int] = []


def under_mpi() -> bool:
    """True when this process was started by an MPI launcher (or srun)."""
    return any(os.environ.get(name) for name in LAUNCHER_VARS)


def _is_the_command() -> bool:
    """This process is `yrmpi ...` or `python -m yrmpi ...` itself, not a rank."""
    argv = list(getattr(sys, "orig_argv", ()) or sys.argv)
    command = os.path.basename(argv[0]) == "yrmpi" if argv else False
    module = any(a == "-m" and b == "yrmpi" for a, b in zip(argv, argv[1:]))
    return (command or module) and not under_mpi()


def hold_stop_signals() -> None:
    """In the `yrmpi` command's own process, hold stop signals until the launcher takes over."""
    if _is_the_command() and not _held_installed():
        for sig in STOP_SIGNALS:
            signal.signal(sig, _hold)


def _hold(signum: int, _frame: object) -> None:
    _held.append(signum)


def _held_installed() -> bool:
    return signal.getsignal(signal.SIGTERM) is _hold


def held_signals() -> list[int]:
    """The stop signals that arrived while the command started up (in order)."""
    return list(_held)
