"""Starting a job: what the launcher tells a process, and launching one with the MPI library's mpiexec.

Kept apart from the runtime: the runtime only needs ranks that exist; how they were started
(mpiexec, srun, this launcher) does not matter to it. Imports only yrmpi.core.

- environment: launcher variables, `under_mpi()`, `launcher_rank()`, multi-node allocations,
  the MPI flavour of an mpiexec, the exit codes jobs use (EXIT_INTERRUPTED);
- mpiexec: finding mpiexec, YRMPI_FT, the flags yrmpi gives it, `command()`;
- state_dirs: a private Open MPI session and shared-memory directory per single-node launch;
- process: `run()` with signal forwarding and its environment, `relaunch_self()` (self-launch);
- completion: the driver's completion record (`record`), by which `run()` tells a finished
  driver from a lost job.
"""

from __future__ import annotations

from .completion import RESULT_VAR, read_record, record
from .environment import (
    ALLOCATION_HOSTS,
    EXIT_CODES,
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_LOST,
    EXIT_OK,
    EXIT_OUTPUT,
    LAUNCHER_VARS,
    RANK_VARS,
    flavor,
    launcher_rank,
    multi_node_allocation,
    slurm_node_labels,
    under_mpi,
)
from .mpiexec import (
    FT_LEVELS,
    add_host_options,
    command,
    fault_tolerance_level,
    find_mpiexec,
    host_flags,
    mpiexec_flags,
)
from .process import forward_flags, launch_env, relaunch_self, run
from .state_dirs import HOST_FLAGS, HOSTFILE_VARS, OPENMPI_STATE_VARS, PRIVATE_PREFIX, private_state_dirs, single_node

__all__ = [
    "ALLOCATION_HOSTS", "EXIT_CODES", "EXIT_CONFIG", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_LOST", "EXIT_OK",
    "EXIT_OUTPUT", "FT_LEVELS", "HOSTFILE_VARS", "HOST_FLAGS", "LAUNCHER_VARS", "OPENMPI_STATE_VARS",
    "PRIVATE_PREFIX", "RANK_VARS", "RESULT_VAR", "add_host_options", "command", "fault_tolerance_level",
    "find_mpiexec", "flavor",
    "forward_flags", "host_flags", "launch_env", "read_record", "record",
    "launcher_rank", "mpiexec_flags", "multi_node_allocation", "private_state_dirs", "relaunch_self", "run",
    "single_node", "slurm_node_labels", "under_mpi",
]
