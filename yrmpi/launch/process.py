"""Running a launch line: its environment, signal forwarding, its exit code; self-launch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from ..core.errors import YRRuntimeError
from .environment import flavor
from .mpiexec import command
from .state_dirs import private_state_dirs, single_node

__all__ = ["launch_env", "relaunch_self", "run"]


def launch_env() -> dict[str, str]:
    env = dict(os.environ)
    env["YRMPI_LAUNCHED"] = "1"
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # Open MPI refuses root without these
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    env.setdefault("PMIX_MCA_psec", "native")
    # Large results arrive in fresh arrays: with glibc's defaults each one is a new mmap that
    # page-faults in at a third of memory bandwidth. Keep big blocks on the heap and reuse them.
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(1 << 30))
    env.setdefault("MALLOC_TRIM_THRESHOLD_", str(4 << 30))
    return env


def run(cmd: list[str], translate: Mapping[int, int] | None = None) -> int:
    """Run a launch line; forward the signals Slurm and users send; return its exit code.

    `translate` maps a received signal to the one mpiexec gets: Open MPI's mpiexec ends the
    job on SIGTERM but passes SIGUSR1 on to every rank, so a sweep asks for SIGTERM -> SIGUSR1
    to stop gracefully.
    """
    env = launch_env()
    with private_state_dirs(env, flavor(cmd[0]) == "openmpi" and single_node(cmd)):
        proc = subprocess.Popen(cmd, env=env)
        mapping = dict(translate or {})

        def forward(signum: int, _frame: object) -> None:
            proc.send_signal(mapping.get(signum, signum))

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(sig, forward)
        rc = proc.wait()
    return 128 - rc if rc < 0 else rc


def relaunch_self(conf: object | None) -> int:
    """`python job.py` with no launcher: run the same script under mpiexec; its exit code."""
    from ..core.options import Config

    script = sys.argv[0] if sys.argv else ""
    if not script or script == "-c" or not Path(script).is_file():
        raise YRRuntimeError(
            "yr.init() outside an MPI launcher can only launch a script file; run it under "
            "mpiexec/srun, or as: yrmpi run -n 9 script.py"
        )
    n = (conf if isinstance(conf, Config) else Config()).resolved().num_ranks
    return run(command(n, [sys.executable, "-m", "yrmpi", *sys.argv]))
