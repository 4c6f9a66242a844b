"""Submitting a written script with sbatch."""

from __future__ import annotations

import os
import shutil
import subprocess

from .errors import SlurmError

__all__ = ["submit"]


def submit(script: str | os.PathLike) -> str:
    """`sbatch --parsable SCRIPT`; the job id. SlurmError with sbatch's message when it refuses."""
    if shutil.which("sbatch") is None:
        raise SlurmError("sbatch not found on PATH: submit from a Slurm login node (or slurm/local-cluster.sh start)")
    proc = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise SlurmError(f"sbatch {script} failed: {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout.strip().split(";")[0]
