"""The launcher line of a generated script: mpiexec inside the allocation, or srun direct launch."""

from __future__ import annotations

from .. import launch
from .errors import SlurmError

__all__ = ["LAUNCHERS", "launcher_line"]

LAUNCHERS = ("mpiexec", "srun")


def launcher_line(launcher: str, flavor: str, cpus_per_task: int | None = None,
                  mpiexec: str | None = None, fault_tolerance: str | None = None) -> list[str]:
    """The concrete launch words for a generated script ("$SLURM_NTASKS" stays a shell word)."""
    if launcher == "mpiexec":
        path = mpiexec or launch.find_mpiexec()
        return [path, "-n", '"$SLURM_NTASKS"', *launch.mpiexec_flags(path, fault_tolerance)]
    if launcher == "srun":
        mpi = {"openmpi": ["--mpi=pmix"], "mpich": ["--mpi=pmi2"]}.get(flavor, [])
        cpus = [f"--cpus-per-task={cpus_per_task}"] if cpus_per_task and cpus_per_task > 1 else []
        return ["srun", *mpi, *cpus]
    raise SlurmError(f"--launcher: found {launcher!r}, expected one of {', '.join(LAUNCHERS)}")
