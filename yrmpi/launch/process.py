"""Running a launch line: its environment, signal forwarding, its exit code; self-launch."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from ..core.errors import YRRuntimeError
from ..core.startup import held_signals
from .completion import RESULT_VAR, read_record, record_path
from .environment import EXIT_INTERRUPTED, EXIT_LOST, flavor
from .mpiexec import command
from .state_dirs import private_state_dirs, single_node

__all__ = ["EXIT_GRACE_S", "FORWARD_NAMES", "FORWARD_PREFIXES", "forward_flags", "launch_env", "relaunch_self",
           "run"]

log = logging.getLogger("yrmpi")

# Variables a multi-node Open MPI launch passes to remote ranks with `-x` (PRRTE forwards only
# OMPI_* and PMIX_* by itself): the job's settings, the import path, the allocator tuning below.
FORWARD_PREFIXES = ("YRMPI_", "MALLOC_")
FORWARD_NAMES = ("PYTHONPATH", "PYTHONUNBUFFERED", "PYTHONHASHSEED")
# Open MPI's byte transports for a one-node job: itself and shared memory, no TCP (whose
# transport makes every rank listen on all interfaces). A value the user set wins.
ONE_NODE_BTL = "self,sm"
# After the driver has finished, how long mpiexec gets to end the job by itself (YRMPI_EXIT_GRACE_S)
# before the launcher ends it: ranks on a node that stopped answering never exit.
EXIT_GRACE_S = 15.0


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


def forward_flags(env: Mapping[str, str]) -> list[str]:
    """`-x NAME` for each variable of `env` that remote ranks need (Open MPI)."""
    names = sorted(name for name in env if name.startswith(FORWARD_PREFIXES) or name in FORWARD_NAMES)
    return [flag for name in names for flag in ("-x", name)]


def _runs_yrmpi(cmd: list[str]) -> bool:
    """The program is yrmpi's entry (`python -m yrmpi ...`), whose rank 0 records the driver's end."""
    return any(a == "-m" and b == "yrmpi" for a, b in zip(cmd, cmd[1:]))


def run(cmd: list[str], translate: Mapping[int, int] | None = None) -> int:
    """Run a launch line; forward the signals Slurm and users send; return the job's exit code.

    `translate` maps a received signal to the one mpiexec gets: Open MPI's mpiexec ends the
    job on SIGTERM but passes SIGUSR1 on to every rank, so a sweep asks for SIGTERM -> SIGUSR1
    to stop gracefully.

    For a yrmpi program the code is the driver's own, from its completion record
    (`completion.py`), not mpiexec's: a job whose driver never finished (a node lost, rank 0
    killed, MPI ending the job) ends with EXIT_LOST and one line saying so, whatever mpiexec
    returned; a job whose driver finished but whose ranks do not exit (a node that stopped
    answering) is ended after EXIT_GRACE_S. A multi-node Open MPI launch passes the job's
    variables to remote ranks (`forward_flags`).
    """
    if held_signals():  # stopped while this command started up: nothing has run
        log.warning("stopped by %s before the job started; nothing ran; exit code %d (rerun to start)",
                    signal.Signals(held_signals()[0]).name, EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED
    env = launch_env()
    openmpi = flavor(cmd[0]) == "openmpi"
    local = single_node(cmd, env)
    expect = _runs_yrmpi(cmd)
    if openmpi and local:  # shared memory only: the ranks of a one-node job open no listening socket
        env.setdefault("OMPI_MCA_btl", ONE_NODE_BTL)
    with private_state_dirs(env, openmpi and local), record_path(env, not local) as result:
        if not expect:
            env.pop(RESULT_VAR, None)
        if openmpi and not local:  # (after the record's path is set: rank 0 may be remote)
            cmd = [cmd[0], *forward_flags(env), *cmd[1:]]
        proc = subprocess.Popen(cmd, env=env)
        mapping = dict(translate or {})
        signalled: list[int] = []

        def forward(signum: int, _frame: object) -> None:
            signalled.append(signum)
            proc.send_signal(mapping.get(signum, signum))

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(sig, forward)
        for signum in held_signals():  # held after the check above, before the handlers: pass them on
            forward(signum, None)
        rc = _wait(proc, result if expect else None)
        code = read_record(result) if expect else None
    rc = 128 - rc if rc < 0 else rc
    if not expect or code is not None:
        if code is not None and code != rc:
            log.debug("yrmpi: the driver ended with %d, mpiexec with %d", code, rc)
        return rc if code is None else code
    if signalled:  # stopped on request before the driver finished: work is left, whatever mpiexec said
        log.warning("stopped by %s before the driver finished (mpiexec exited with %d); exit code %d: "
                    "rerun to resume", signal.Signals(signalled[0]).name, rc, EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED
    print(f"yrmpi: the job was lost before the driver finished: mpiexec exited with code {rc} and rank 0 "
          f"recorded no result (a node or rank 0 died, or MPI ended the job; see above); exit code {EXIT_LOST}",
          file=sys.stderr, flush=True)
    return EXIT_LOST


def _wait(proc: subprocess.Popen, result: str | None) -> int:
    """mpiexec's exit code; once the driver has recorded its end, mpiexec gets EXIT_GRACE_S to
    finish before it is ended (SIGTERM, then SIGKILL)."""
    if result is None:
        return proc.wait()
    grace = float(os.environ.get("YRMPI_EXIT_GRACE_S", EXIT_GRACE_S))
    finished_at = None
    while True:
        try:
            return proc.wait(timeout=0.25)
        except subprocess.TimeoutExpired:
            pass
        if finished_at is None:
            if os.path.exists(result):
                finished_at = time.monotonic()
            continue
        if time.monotonic() - finished_at > grace:
            log.error("yrmpi: the driver finished %.0f s ago but some ranks have not exited (a node that "
                      "stopped answering?); ending mpiexec", grace)
            proc.terminate()
            try:
                return proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                return proc.wait()


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
