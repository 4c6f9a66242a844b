"""What the launcher tells this process: whether one started it, its rank, how many nodes the
allocation spans, which MPI an mpiexec belongs to, and the exit codes the project's jobs use."""

from __future__ import annotations

import functools
import os
import subprocess

from ..core.startup import LAUNCHER_VARS, under_mpi

__all__ = [
    "ALLOCATION_HOSTS", "EXIT_CODES", "EXIT_CONFIG", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_LOST", "EXIT_OK",
    "EXIT_OUTPUT", "LAUNCHER_VARS", "RANK_VARS", "flavor", "launcher_rank",
    "multi_node_allocation", "under_mpi",
]

# Stopped by a signal, rerun to resume (sysexits' EX_TEMPFAIL): a sweep exits with it, and the
# Slurm batch scripts requeue on it (their bash says 75).
EXIT_INTERRUPTED = 75

# The other codes a sweep (and a job that follows the same rules) ends with. Chosen apart from
# 1 (any Python traceback), 126/127 (the shell), 128+N (killed by signal N) and what mpiexec and
# Slurm report themselves, so a batch script can tell them apart; docs/sweeps.md has the table.
EXIT_OK = 0  # every experiment finished
EXIT_CONFIG = 2  # bad input: the file, the command line, an unusable output folder; nothing ran
EXIT_FAILED = 3  # ran to the end, but some experiments failed for good (results are written)
EXIT_LOST = 69  # the job was lost (rank 0, a node, MPI itself) with work left; rerun to resume
EXIT_OUTPUT = 73  # the output folder became unusable during the run (full disk, read-only, ...)
EXIT_CODES = {
    EXIT_OK: "every experiment finished",
    EXIT_CONFIG: "bad input (file, command line, output folder); nothing ran",
    EXIT_FAILED: "some experiments failed for good",
    EXIT_LOST: "the job was lost (rank 0, a node, MPI) with work left; rerun to resume",
    EXIT_OUTPUT: "the output folder became unusable during the run",
    EXIT_INTERRUPTED: "stopped with work left (signal, lost ranks); rerun to resume",
}

# This process's rank, in the order asked: Open MPI, PMIx, PMI-1/2 (MPICH/Hydra), a Slurm task.
RANK_VARS = ("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID")
# Host lists of batch systems whose allocations may span nodes (PBS, LSF).
ALLOCATION_HOSTS = ("PBS_NODEFILE", "LSB_HOSTS", "LSB_MCPU_HOSTS")


def launcher_rank() -> int:
    """This process's rank from the launcher's environment (0 when not launched)."""
    for name in RANK_VARS:
        raw = os.environ.get(name)
        if raw and raw.isdigit():
            return int(raw)
    return 0


def multi_node_allocation() -> bool:
    """True when this process runs in an allocation that may span nodes: a PBS/LSF host list,
    or a Slurm job of more than one node."""
    if any(os.environ.get(var) for var in ALLOCATION_HOSTS):
        return True
    nodes = os.environ.get("SLURM_JOB_NUM_NODES") or os.environ.get("SLURM_NNODES") or "1"
    return nodes.isdigit() and int(nodes) > 1


@functools.cache
def flavor(mpiexec: str) -> str:
    """'openmpi', 'mpich' (MPICH and its derivatives: Intel MPI, MVAPICH) or 'unknown', from
    `mpiexec --version`."""
    try:
        out = subprocess.run([mpiexec, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    low = out.lower()
    if "open mpi" in low or "open-mpi" in low or "prte" in low:
        return "openmpi"
    if "hydra" in low or "mpich" in low or "intel(r) mpi" in low or "mvapich" in low:
        return "mpich"
    return "unknown"


def slurm_node_labels(timeout: float = 5.0) -> dict[str, dict[str, str]]:
    """The Slurm features of the job's nodes as affinity labels, per host:
    `{"node7": {"features": "gpu,ib", "feature:gpu": "1", "feature:ib": "1"}}`. Empty outside
    a Slurm job or when `scontrol` cannot answer (a label then simply does not exist)."""
    nodes = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST")
    if not os.environ.get("SLURM_JOB_ID") or not nodes:
        return {}
    try:
        out = subprocess.run(["scontrol", "show", "node", "-o", nodes], capture_output=True, text=True,
                             timeout=timeout).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    labels: dict[str, dict[str, str]] = {}
    for line in out.splitlines():
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
        host = fields.get("NodeHostName") or fields.get("NodeName")
        features = [f for f in (fields.get("ActiveFeatures") or fields.get("AvailableFeatures") or "").split(",")
                    if f and f != "(null)"]
        if host and features:
            labels[host] = {"features": ",".join(features), **{f"feature:{f}": "1" for f in features}}
    return labels
