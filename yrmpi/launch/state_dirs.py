"""Private directories for the state Open MPI keys on mpiexec's pid, one set per launch.

A job killed with SIGKILL leaves that state behind, and pids wrap (at 32768 on many systems): a
later mpiexec with the same pid finds it and either fails to start ("The PMIx server's listener
thread failed to start") or, reusing stale shared-memory queues, loses messages and hangs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .environment import multi_node_allocation

__all__ = ["HOSTFILE_PARAMS", "HOSTFILE_VARS", "HOST_FLAGS", "OPENMPI_STATE_VARS", "PRIVATE_PREFIX",
           "private_state_dirs", "single_node"]

PRIVATE_PREFIX = "yrmpi-launch-"
# Where Open MPI puts the state it keys on mpiexec's pid: its session directory (ompi.<pid>,
# default /tmp) and the shared-memory files of its ranks (sm_segment.<host>.<uid>.<job>.<rank>,
# default /dev/shm; <job> is derived from mpiexec's pid).
OPENMPI_STATE_VARS = {"PRTE_MCA_prte_tmpdir_base": None, "OMPI_MCA_btl_sm_backing_directory": "/dev/shm"}

# Launch options that put ranks on other nodes, in every spelling Open MPI (PRRTE) and MPICH
# (Hydra) accept: one dash or two, `--host a,b` or `--host=a,b`.
HOST_FLAGS = tuple(dash + name for name in ("host", "hostfile", "machinefile", "default-hostfile",
                                            "add-host", "add-hostfile", "hosts")
                   for dash in ("-", "--")) + ("-H",)
# MCA parameters (given with --mca/--prtemca/--omca, or as variables) that name a hostfile.
HOSTFILE_PARAMS = ("prte_default_hostfile", "orte_default_hostfile", "rmaps_default_hostfile")
HOSTFILE_VARS = ("PRTE_MCA_prte_default_hostfile", "OMPI_MCA_orte_default_hostfile",
                 "PRTE_MCA_rmaps_default_hostfile", "HYDRA_HOST_FILE")


def single_node(cmd: list[str], env: dict[str, str] | None = None) -> bool:
    """True when the launch cannot place ranks on another node: private directories exist on
    this node only, and remote ranks see only the variables passed to them, so a multi-node
    launch keeps Open MPI's defaults and forwards the job's variables (`process.run`).

    `env` is the launch environment (default: this process's)."""
    env = os.environ if env is None else env
    if sys.executable in cmd[1:]:  # the launcher's options end where the program starts
        cmd = cmd[:cmd.index(sys.executable, 1)]
    if any(arg.split("=", 1)[0] in HOST_FLAGS or arg in HOSTFILE_PARAMS for arg in cmd):
        return False
    if any(env.get(var) for var in HOSTFILE_VARS):
        return False
    return not multi_node_allocation()


@contextlib.contextmanager
def private_state_dirs(env: dict[str, str], openmpi: bool) -> Iterator[None]:
    """Give one Open MPI launch directories of its own for that state, removed afterwards.

    Directories left by a launcher that was itself killed are removed by the next launch. A
    setting already in the environment wins. Single-node launches only (`single_node`)."""
    made = []
    if openmpi:
        for var, base in OPENMPI_STATE_VARS.items():
            if var in env:
                continue
            base = base if base and os.access(base, os.W_OK) else tempfile.gettempdir()
            _remove_orphans(base)
            made.append(tempfile.mkdtemp(prefix=f"{PRIVATE_PREFIX}{os.getpid()}-", dir=base))
            env[var] = made[-1]
    try:
        yield
    finally:
        for path in made:
            shutil.rmtree(path, ignore_errors=True)


def _remove_orphans(base: str) -> None:
    """Remove private directories whose launcher is gone (killed before it could clean up)."""
    for path in Path(base).glob(f"{PRIVATE_PREFIX}*-*"):
        pid = path.name[len(PRIVATE_PREFIX):].split("-", 1)[0]
        try:
            mine = path.stat().st_uid == os.geteuid()
        except OSError:  # removed meanwhile by another launch
            continue
        if mine and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
