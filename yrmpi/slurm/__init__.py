"""Slurm batch scripts for yrmpi: `yrmpi slurm FILE.yaml` sizes a sweep and writes (or submits) its script.

Kept in its own corner: the runtime never imports this module. Everything Slurm-specific that
happens at run time lives in the bash of the generated script (and of slurm/*.sbatch), so a
user can read and edit it: per-rank capacity from the allocation, the launcher line, passing
Slurm's warning signal to rank 0, and requeueing when the sweep exits with EXIT_INTERRUPTED.
`python -m yrmpi.slurm job.py` is the entry that slurm/job.sbatch uses for plain job scripts.
See docs/slurm.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..scheduling.placement import RankCapacity
    from ..sweep.config import SweepConfig
    from ..sweep.plan import CapacityPlan

__all__ = [
    "CAPACITY_BLOCK", "DETECT_BLOCK", "EXIT_INTERRUPTED", "LAUNCHERS", "RUN_BLOCK", "SlurmError", "Sizing",
    "launcher_line", "mpi_flavor", "mpiexec_flags", "parse_time", "render_sweep", "size_sweep", "slurm_command",
    "submit", "job_main",
]

EXIT_INTERRUPTED = 75  # the sweep runner's "stopped by a signal, rerun to resume" (sweep.runner)
LAUNCHERS = ("mpiexec", "srun")
DEFAULT_TIME = "2:00:00"
AUTO_MEM_CAP_MB = 4000  # default --mem-per-cpu never asks for more than this (unless one instance needs it)
SIGNAL_LEAD_S = 120  # seconds before the time limit that Slurm sends SIGUSR1 to the batch script
WARNING_SLACK_S = 120  # extra time a job needs beyond the lead: Slurm may send the warning a minute early


class SlurmError(ValueError):
    """A request that cannot become a working batch script (message says what to change)."""


# --------------------------------------------------------------------------------- bash blocks
# The same run-time blocks go into every generated script and into slurm/sweep.sbatch and
# slurm/job.sbatch (tests/test_slurm.py checks the templates contain them verbatim).

#: Per-rank capacity from the allocation: yrmpi's Config reads YRMPI_CPU_PER_RANK (millicores)
#: and YRMPI_MEMORY_PER_RANK (MB) on rank 0; values already in the environment win.
CAPACITY_BLOCK = r"""# -- per-rank capacity from the allocation (values set before sbatch win) --------------------
cpus_per_rank=${SLURM_CPUS_PER_TASK:-1}
export YRMPI_CPU_PER_RANK=${YRMPI_CPU_PER_RANK:-$((cpus_per_rank * 1000))}
if [[ -z ${YRMPI_MEMORY_PER_RANK:-} && -n ${SLURM_MEM_PER_CPU:-} ]]; then
    export YRMPI_MEMORY_PER_RANK=$((SLURM_MEM_PER_CPU * cpus_per_rank))
elif [[ -z ${YRMPI_MEMORY_PER_RANK:-} && -n ${SLURM_MEM_PER_NODE:-} ]]; then
    # --mem is per node: split it over the most ranks any node runs ("2(x3),1" -> 2).
    most=$(tr ',' '\n' <<<"${SLURM_TASKS_PER_NODE:-1}" | sed 's/(.*//' | sort -n | tail -n1)
    ranks_per_node=${SLURM_NTASKS_PER_NODE:-$most}
    export YRMPI_MEMORY_PER_RANK=$((SLURM_MEM_PER_NODE / ranks_per_node))
fi
export PYTHONUNBUFFERED=1  # rank output reaches the Slurm log as it happens
# The Open MPI wheel's PMIx otherwise tries its munge plugin and prints a help-file error.
export PMIX_MCA_psec=${PMIX_MCA_psec:-native}
if [[ $(id -u) -eq 0 ]]; then  # Open MPI refuses to run as root without these (containers)
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
"""

#: Start the ranks in the background, pass SIGUSR1 (Slurm's B: warning, or scancel --batch/--full)
#: on to the launcher, which hands it to every rank (rank 0 acts, host ranks ignore it), wait for
#: the real exit code, and requeue on EXIT_INTERRUPTED. On SIGTERM (scancel, the time limit) the
#: shell stays until the launcher has ended the ranks: where Slurm tracks processes by parentage
#: (proctrack/linuxproc) ranks orphaned by an early exit of this shell would outlive the job.
#: `launch` is a bash array set above.
RUN_BLOCK = r"""# -- run: pass SIGUSR1 on to the ranks, requeue when the run says "interrupted" (75) -------------
say() { printf '[%s slurm job %s] %s\n' "$(date '+%F %T')" "${SLURM_JOB_ID:-?}" "$*"; }
restarts=${SLURM_RESTART_COUNT:-0}
say "run $((restarts + 1)) of this job (SLURM_RESTART_COUNT=$restarts), ${SLURM_NTASKS:-?} ranks: ${launch[*]}"
run_id="$SLURM_JOB_ID.$restarts"  # marks the launcher and every rank (their environment), for strays below
# Open MPI keys its session directory and shared-memory files on mpiexec's pid: a killed job's
# leftovers make a later mpiexec given the same pid fail to start or hang. A one-node run gets
# its own (they would not exist on the other nodes of a larger allocation).
private="" shm=""
if ((${SLURM_JOB_NUM_NODES:-1} == 1)); then
    private=$(mktemp -d "${TMPDIR:-/tmp}/yrmpi-launch-$$-XXXXXX")
    shm=$(mktemp -d "/dev/shm/yrmpi-launch-$$-XXXXXX" 2>/dev/null || echo "$private")
    export PRTE_MCA_prte_tmpdir_base=${PRTE_MCA_prte_tmpdir_base:-$private}
    export OMPI_MCA_btl_sm_backing_directory=${OMPI_MCA_btl_sm_backing_directory:-$shm}
fi
YRMPI_SLURM_RUN=$run_id "${launch[@]}" &
child=$!
forward_usr1() {
    say "SIGUSR1 (time limit near, or scancel --signal=USR1): passing it to the ranks"
    kill -USR1 "$child" 2>/dev/null || true
}
ending=""
end_ranks() {
    ending=1
    say "SIGTERM (scancel, scontrol requeue, or the time limit): ending the ranks; this script will not requeue"
    kill -TERM "$child" 2>/dev/null || true
}
trap forward_usr1 USR1
trap end_ranks TERM
while kill -0 "$child" 2>/dev/null; do
    wait "$child"  # returns early when a trapped signal arrives; then wait again
done
wait "$child"
rc=$?
trap - USR1 TERM
if [[ -n $ending ]]; then
    # Open MPI's mpiexec exits on SIGTERM without waiting for its ranks, and a sweep's host ranks
    # ignore SIGTERM (rank 0 ends them): give the ranks of this run 5 s, then SIGKILL them.
    strays() { grep -lsxz "YRMPI_SLURM_RUN=$run_id" /proc/[0-9]*/environ | cut -d/ -f3; }
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        left=$(strays | xargs)
        [[ -z $left ]] && break
        sleep 0.5
    done
    if [[ -n $left ]]; then
        say "ranks still running 5 s after SIGTERM: SIGKILL to $left"
        kill -KILL $left 2>/dev/null || true
    fi
fi
if ((rc == 75)) && [[ -z $ending ]]; then
    if ((restarts >= ${YRMPI_MAX_REQUEUES:-10})); then
        say "exit code 75 (interrupted), but the job was requeued $restarts times (YRMPI_MAX_REQUEUES)" \
            "already; not requeueing. Submit the script again to resume"
    else
        say "exit code 75 (interrupted): requeueing; the next run resumes where this one stopped"
        scontrol requeue "$SLURM_JOB_ID" || say "scontrol requeue failed; submit the script again to resume"
    fi
else
    say "ranks ended with exit code $rc"
fi
rm -rf "$private" "$shm"
exit "$rc"
"""

#: Run-time choice of the launcher line for the MPI that mpi4py loads (used by the templates;
#: generated scripts contain the concrete line instead).
DETECT_BLOCK = r"""# -- launcher: the MPI that mpi4py loads decides the line ---------------------------------------
python=$(command -v python)
probe='import mpi4py; mpi4py.rc.initialize = False  # only ask which library, do not start MPI
from mpi4py import MPI; print(MPI.Get_library_version().strip(chr(0)))'
mpi_library=$("$python" -c "$probe" 2>&1) || { echo "cannot import mpi4py with $python: $mpi_library" >&2; exit 1; }
case $mpi_library in
*"Open MPI"*) mpi=openmpi ;;
*MPICH* | *"Intel(R) MPI"* | *MVAPICH*) mpi=mpich ;;
*) mpi=other ;;
esac
mpiexec=$(dirname "$python")/mpiexec  # the MPI library's own mpiexec (venv wheels put it here)
[[ -x $mpiexec ]] || mpiexec=$(command -v mpiexec || echo mpiexec)
case ${YRMPI_LAUNCHER:-mpiexec}/$mpi in
mpiexec/openmpi)
    # Same flags as `yrmpi run` (yrmpi/launch.py): no binding (a rank's instances are threads; idle
    # ranks back off), declared CPUs may exceed cores; YRMPI_FT: 1 (default) ULFM, so a rank killed
    # by a signal is reported to the others instead of ending the job; heartbeat adds Open MPI's
    # heartbeat detector; 0 turns fault tolerance off (docs/faults.md).
    launch=("$mpiexec" -n "$SLURM_NTASKS" --oversubscribe --bind-to none)
    case ${YRMPI_FT:-1} in
    0) ;;
    heartbeat) launch+=(--with-ft ulfm --mca mpi_ft_detector true --mca mpi_ft_detector_thread true) ;;
    *) launch+=(--with-ft ulfm) ;;
    esac
    ;;
mpiexec/*) launch=("$mpiexec" -n "$SLURM_NTASKS") ;;
srun/openmpi) launch=(srun --mpi=pmix) ;;
srun/mpich) launch=(srun --mpi=pmi2) ;;
srun/*) launch=(srun) ;;
*) echo "YRMPI_LAUNCHER must be mpiexec or srun, got '${YRMPI_LAUNCHER}'" >&2; exit 2 ;;
esac
if [[ ${launch[0]} == srun && -n ${SLURM_CPUS_PER_TASK:-} ]]; then
    launch+=("--cpus-per-task=$SLURM_CPUS_PER_TASK")  # srun 22.05-23.02 does not inherit it
fi
"""


# ----------------------------------------------------------------------------------- MPI, time
def mpi_flavor() -> str:
    """'openmpi', 'mpich' or 'other': the MPI library mpi4py loads here, without initialising it."""
    code = ("import mpi4py; mpi4py.rc.initialize = False; from mpi4py import MPI; "
            "print(MPI.Get_library_version())")
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return "other"
    if "Open MPI" in out:
        return "openmpi"
    if any(name in out for name in ("MPICH", "Intel(R) MPI", "MVAPICH")):
        return "mpich"
    return "other"


def mpiexec_flags(mpiexec: str, fault_tolerance: str | None = None) -> list[str]:
    """The flags `yrmpi run` gives this mpiexec (launch.command), so batch jobs launch alike.

    fault_tolerance is a YRMPI_FT level ("0", "1", "heartbeat"); None reads YRMPI_FT.
    """
    from .. import launch

    cmd = launch.command(2, ["ARGV"], mpiexec=mpiexec, fault_tolerance=fault_tolerance)
    return cmd[3:-1]  # drop "mpiexec -n 2" and the argv placeholder


def launcher_line(launcher: str, flavor: str, cpus_per_task: int | None = None,
                  mpiexec: str | None = None, fault_tolerance: str | None = None) -> list[str]:
    """The concrete launch words for a generated script ("$SLURM_NTASKS" stays a shell word)."""
    if launcher == "mpiexec":
        from .. import launch

        path = mpiexec or launch.find_mpiexec()
        return [path, "-n", '"$SLURM_NTASKS"', *mpiexec_flags(path, fault_tolerance)]
    if launcher == "srun":
        mpi = {"openmpi": ["--mpi=pmix"], "mpich": ["--mpi=pmi2"]}.get(flavor, [])
        cpus = [f"--cpus-per-task={cpus_per_task}"] if cpus_per_task and cpus_per_task > 1 else []
        return ["srun", *mpi, *cpus]
    raise SlurmError(f"--launcher: found {launcher!r}, expected one of {', '.join(LAUNCHERS)}")


_TIME_FORMATS = (
    (re.compile(r"^(\d+)$"), ("m",)),
    (re.compile(r"^(\d+):(\d+)$"), ("m", "s")),
    (re.compile(r"^(\d+):(\d+):(\d+)$"), ("h", "m", "s")),
    (re.compile(r"^(\d+)-(\d+)$"), ("d", "h")),
    (re.compile(r"^(\d+)-(\d+):(\d+)$"), ("d", "h", "m")),
    (re.compile(r"^(\d+)-(\d+):(\d+):(\d+)$"), ("d", "h", "m", "s")),
)
_UNIT_S = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_time(text: str) -> int:
    """Seconds in a Slurm --time value (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS)."""
    for pattern, units in _TIME_FORMATS:
        match = pattern.match(text.strip())
        if match:
            seconds = sum(int(v) * _UNIT_S[u] for v, u in zip(match.groups(), units))
            if seconds <= 0:
                break
            return seconds
    raise SlurmError(f"--time: found {text!r}, expected a Slurm time limit such as 30, 2:00:00 or 1-12:00:00")


# -------------------------------------------------------------------------------------- sizing
@dataclass(frozen=True)
class Sizing:
    """How many ranks a sweep asks Slurm for, and why (``lines`` is the arithmetic, for comments)."""

    ntasks: int
    nodes: int | None
    tasks_per_node: int | None
    cpus_per_task: int
    mem_per_cpu: int  # MB
    concurrency: int
    experiments: int
    todo: int
    lines: tuple[str, ...]


def _host_ranks(hosts: int, cpu: int, memory: int, custom: dict[str, float],
                tasks_per_node: int | None) -> list[RankCapacity]:
    """Host ranks 1..hosts as Slurm places them (block distribution: rank r on node r // T)."""
    from ..scheduling.placement import RankCapacity

    per_node = tasks_per_node or (hosts + 1)
    return [RankCapacity(r, f"node{r // per_node}", cpu, memory, dict(custom)) for r in range(1, hosts + 1)]


def _auto_mem_per_cpu(config: SweepConfig, cpus_per_task: int, wanted: int) -> tuple[int, str]:
    """(MB per CPU, why) when --mem-per-cpu is not given.

    Enough that memory never limits placement before CPU does: the most memory any mix of the
    `wanted` experiments' instances can put on one rank within its CPU (rounded up to 100 MB),
    capped at AUTO_MEM_CAP_MB per CPU (then memory does limit, and the plan asks for more
    ranks), but never below the largest single instance.
    """
    rank_cpu = cpus_per_task * 1000
    sup, wrk = config.supervisor_resources, config.worker_resources
    max_sup = wanted if sup.cpu == 0 else min(wanted, rank_cpu // sup.cpu)
    need = 0
    for a in range(max_sup + 1):
        room = rank_cpu - a * sup.cpu
        b = 0 if not config.workers else (wanted * config.workers if wrk.cpu == 0
                                          else min(wanted * config.workers, room // wrk.cpu))
        need = max(need, a * sup.memory + b * wrk.memory)
    largest = max(sup.memory, wrk.memory if config.workers else 0)
    per_cpu = max(math.ceil(need / cpus_per_task / 100) * 100, 100)
    floor = math.ceil(largest / cpus_per_task / 100) * 100
    if per_cpu > AUTO_MEM_CAP_MB and floor <= AUTO_MEM_CAP_MB:
        return AUTO_MEM_CAP_MB, (f"capped at {AUTO_MEM_CAP_MB} MB per CPU, so memory limits how many share a rank; "
                                 "set --mem-per-cpu to change")
    return max(per_cpu, floor), "enough that memory never limits before CPU; set --mem-per-cpu to change"


def _fit_hint(config: SweepConfig, rank_cpu: int, rank_mem: int, cpus_per_task: int) -> str:
    """What to ask Slurm for when one instance is bigger than a rank (empty when it is not that)."""
    demands = [config.supervisor_resources] + ([config.worker_resources] if config.workers else [])
    cpu = max(d.cpu for d in demands)
    memory = max(d.memory for d in demands)
    if cpu > rank_cpu:
        return f"; try --cpus-per-task {math.ceil(cpu / 1000)}"
    if memory > rank_mem:
        return f"; try --mem-per-cpu {math.ceil(memory / cpus_per_task / 100) * 100}"
    return ""


def size_sweep(config: SweepConfig, todo: int, experiments: int, *, nodes: int | None = None,
               tasks_per_node: int | None = None, cpus_per_task: int = 1, mem_per_cpu: int | None = None,
               custom: dict[str, float] | None = None) -> Sizing:
    """Ranks for the sweep's wanted concurrency (max_concurrent, else everything left) plus the driver.

    The count comes from the sweep's own capacity plan (simulated placement on ranks with this
    allocation's per-rank capacity), searched for the fewest host ranks that hold the wanted
    number of experiments at once. With --nodes and --tasks-per-node the count is given and the
    plan says how many experiments fit.
    """
    from ..sweep.config import SweepConfigError
    from ..sweep.plan import plan_capacity

    if cpus_per_task < 1:
        raise SlurmError(f"--cpus-per-task: found {cpus_per_task}, expected an integer >= 1")
    for name, value in (("--nodes", nodes), ("--tasks-per-node", tasks_per_node), ("--mem-per-cpu", mem_per_cpu)):
        if value is not None and value < 1:
            raise SlurmError(f"{name}: found {value}, expected an integer >= 1")
    custom = dict(custom or {})
    left = max(todo, 1)
    wanted = min(config.max_concurrent or left, left)
    mem_note = "given"
    if mem_per_cpu is None:
        mem_per_cpu, mem_note = _auto_mem_per_cpu(config, cpus_per_task, wanted)
    rank_cpu, rank_mem = cpus_per_task * 1000, mem_per_cpu * cpus_per_task

    def plan_for(hosts: int, want: int) -> CapacityPlan:
        return plan_capacity(config, _host_ranks(hosts, rank_cpu, rank_mem, custom, tasks_per_node), want)

    try:
        if nodes is not None and tasks_per_node is not None:
            ntasks = nodes * tasks_per_node
            if ntasks < 2:
                raise SlurmError(f"--nodes {nodes} x --tasks-per-node {tasks_per_node} = {ntasks} rank; "
                                 "a yrmpi job needs a driver and at least one host rank")
            how = f"--nodes {nodes} x --tasks-per-node {tasks_per_node} = {ntasks} ranks (given)"
        else:
            # Fewest host ranks holding `wanted` at once; one rank per instance always suffices.
            lo, hi = 1, wanted * (config.workers + 1)
            if plan_for(hi, wanted).fit < wanted:
                raise SlurmError(f"{wanted} experiments do not fit at once even on {hi} host ranks; "
                                 "lower max_concurrent or the resources")
            while lo < hi:
                mid = (lo + hi) // 2
                if plan_for(mid, wanted).fit >= wanted:
                    hi = mid
                else:
                    lo = mid + 1
            ntasks = lo + 1
            how = f"{lo} host ranks hold {wanted} at once (simulated placement) + 1 driver = {ntasks} ranks"
            if tasks_per_node is not None:
                nodes = max(math.ceil(ntasks / tasks_per_node), nodes or 1)
                full = nodes * tasks_per_node
                if full != ntasks:
                    how += f"; rounded up to {nodes} nodes x {tasks_per_node} = {full} ranks"
                ntasks = full
            elif nodes is not None and ntasks < nodes:
                how += f"; raised to one rank per node ({nodes})"
                ntasks = nodes
        plan = plan_for(ntasks - 1, left)
    except SweepConfigError as exc:
        raise SlurmError(str(exc) + _fit_hint(config, rank_cpu, rank_mem, cpus_per_task)) from None
    lines = (
        f"sweep {config.name}: {experiments} experiments, {todo} left to run"
        + (f"; max_concurrent {config.max_concurrent}" if config.max_concurrent else ""),
        f"each host rank: {cpus_per_task} CPU (--cpus-per-task) = {rank_cpu} millicores, "
        f"{cpus_per_task} x {mem_per_cpu} MB (--mem-per-cpu, {mem_note}) = {rank_mem} MB"
        + (f", custom {json.dumps(custom)}" if custom else ""),
        f"wanted at once: {wanted} -> {how}",
        f"plan on {ntasks - 1} host ranks: {plan.summary}",
    )
    return Sizing(ntasks=ntasks, nodes=nodes, tasks_per_node=tasks_per_node, cpus_per_task=cpus_per_task,
                  mem_per_cpu=mem_per_cpu, concurrency=plan.concurrency, experiments=experiments, todo=todo,
                  lines=lines)


# ------------------------------------------------------------------------------------ rendering
def _wrap_comment(text: str, indent: str = "#   ", width: int = 100) -> list[str]:
    """`text` as comment lines no longer than `width`; continuation lines indented two more."""
    out, line = [], ""
    for word in text.split():
        if line and len(indent) + len(line) + 1 + len(word) > width:
            out.append(line)
            line = "  " + word
        else:
            line = f"{line} {word}" if line else word
    if line:
        out.append(line)
    return [f"{indent}{x}" for x in out]


_FLAVOR_NAMES = {"openmpi": "Open MPI", "mpich": "MPICH"}  # for comments


def _venv_activate() -> str | None:
    """`source .../activate` line when this Python runs in a venv, else None."""
    activate = Path(sys.prefix) / "bin" / "activate"
    return f"source {shlex.quote(str(activate))}" if sys.prefix != sys.base_prefix and activate.exists() else None


def render_sweep(*, sizing: Sizing, sweep_argv: list[str], time_limit: str, signal_lead: int,
                 job_name: str, workdir: str, launcher: str, flavor: str, partition: str | None = None,
                 account: str | None = None, custom: dict[str, float] | None = None,
                 max_requeues: int = 10, command: str = "", fault_tolerance: str | None = None) -> str:
    """The batch script text for one sweep (concrete launcher line, sizing comment, run block)."""
    python = sys.executable
    launch = [*launcher_line(launcher, flavor, sizing.cpus_per_task, fault_tolerance=fault_tolerance),
              shlex.quote(python), "-m", "yrmpi",
              "sweep", *(shlex.quote(a) for a in sweep_argv)]
    from ..launch import fault_tolerance_level

    level = fault_tolerance if fault_tolerance is not None else fault_tolerance_level()
    if launcher == "mpiexec" and flavor == "openmpi" and level != "0":
        ft = (f"with ULFM (YRMPI_FT={level} when this was written): a rank killed by a signal is reported to the "
              "others instead of ending the job")
    else:
        ft = ("without ULFM: the death of any rank ends the whole job step (srun direct launch, YRMPI_FT=0, or an "
              "MPI without ULFM); the sweep resumes from its journal when run again")
    header = [
        "#!/bin/bash",
        f"# yrmpi sweep as a Slurm batch job, written by: {command or 'yrmpi slurm'}",
        f"# on {time.strftime('%Y-%m-%d %H:%M:%S')}. Submit with: sbatch THIS_FILE   (docs/slurm.md)",
        "#",
        "# Sizing (the sweep's own capacity plan, with this allocation's per-rank capacity):",
        *(w for line in sizing.lines for w in _wrap_comment(line)),
        "#",
        "# At run time: rank 0 drives the sweep, ranks 1..N-1 host supervisors and workers. "
        f"{signal_lead} s before the",
        "# time limit Slurm sends SIGUSR1 to this script (B:), which passes it to the ranks; rank 0 stops",
        "# starting experiments, gives running ones grace_period seconds, journals the rest and exits 75;",
        "# the script then requeues the job and the next run resumes from the journal (finished",
        "# experiments never run again). Stop it by hand the same way: scancel --signal=USR1 --batch JOBID",
        *_wrap_comment(f"Launcher: {launcher} ({_FLAVOR_NAMES.get(flavor, 'unknown MPI')}), {ft}.", indent="# "),
        "#",
        f"#SBATCH --job-name={job_name}",
    ]
    if sizing.nodes is not None:
        header.append(f"#SBATCH --nodes={sizing.nodes}")
    if sizing.tasks_per_node is not None:
        header.append(f"#SBATCH --ntasks-per-node={sizing.tasks_per_node}")
    header += [
        f"#SBATCH --ntasks={sizing.ntasks}",
        f"#SBATCH --cpus-per-task={sizing.cpus_per_task}",
        f"#SBATCH --mem-per-cpu={sizing.mem_per_cpu}",
        f"#SBATCH --time={time_limit}",
        f"#SBATCH --chdir={workdir}",
        "#SBATCH --output=%x-%j.out",
        "#SBATCH --open-mode=append",
        f"#SBATCH --signal=B:USR1@{signal_lead}",
        "#SBATCH --requeue",
    ]
    if partition:
        header.append(f"#SBATCH --partition={partition}")
    if account:
        header.append(f"#SBATCH --account={account}")
    body = ["", "set -uo pipefail  # no -e: the ranks' exit code decides what happens next"]
    activate = _venv_activate()
    if activate:
        body.append(activate)
    body.append(f"export YRMPI_MAX_REQUEUES=${{YRMPI_MAX_REQUEUES:-{max_requeues}}}")
    if custom:
        body.append(f"export YRMPI_RESOURCES=${{YRMPI_RESOURCES:-{shlex.quote(json.dumps(custom))}}}")
    body += ["", CAPACITY_BLOCK.rstrip("\n"), "", "launch=(" + " ".join(launch) + ")", "", RUN_BLOCK.rstrip("\n")]
    return "\n".join(header + body) + "\n"


# ------------------------------------------------------------------------------------- commands
def submit(script: str | os.PathLike) -> str:
    """`sbatch --parsable SCRIPT`; the job id. SlurmError with sbatch's message when it refuses."""
    if shutil.which("sbatch") is None:
        raise SlurmError("sbatch not found on PATH: submit from a Slurm login node (or slurm/local-cluster.sh start)")
    proc = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise SlurmError(f"sbatch {script} failed: {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout.strip().split(";")[0]


def _custom_arg(text: str) -> dict[str, float]:
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict) or not all(isinstance(v, (int, float)) and v >= 0 for v in value.values()):
        raise argparse.ArgumentTypeError(f'expected a JSON object of amounts like {{"gpu": 1}}, got {text!r}')
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="yrmpi slurm",
        description="Write a Slurm batch script for a sweep: ranks sized from the sweep's capacity plan (host ranks "
        "for the wanted concurrency + 1 driver), the launcher line for the installed MPI, the warning signal and "
        "requeue-on-interrupt lines. See docs/slurm.md.")
    p.add_argument("file", help="the sweep YAML")
    p.add_argument("--nodes", type=_positive, metavar="N", help="nodes (default: let Slurm choose)")
    p.add_argument("--tasks-per-node", type=_positive, metavar="T",
                   help="ranks per node; with --nodes it fixes the rank count")
    p.add_argument("--cpus-per-task", type=_positive, default=1, metavar="C",
                   help="CPUs per rank (default 1); each host rank offers C x 1000 millicores")
    p.add_argument("--mem-per-cpu", type=_positive, metavar="MB",
                   help="memory per CPU in MB (default: enough that memory never limits before CPU)")
    p.add_argument("--resources", type=_custom_arg, metavar="JSON",
                   help='custom capacity per host rank, e.g. \'{"gpu": 1}\' (add the matching #SBATCH --gres '
                   "line yourself)")
    p.add_argument("--time", default=DEFAULT_TIME, help=f"time limit (default {DEFAULT_TIME})")
    p.add_argument("--partition", metavar="P")
    p.add_argument("--account", metavar="A")
    p.add_argument("--job-name", metavar="NAME", help="job name (default: yrmpi-<sweep name>)")
    p.add_argument("--launcher", choices=LAUNCHERS, default="mpiexec",
                   help="mpiexec inside the allocation (default; ULFM with Open MPI) or srun direct launch")
    p.add_argument("--max-concurrent", type=_positive, metavar="N",
                   help="experiments at once (default: the YAML's max_concurrent, else all that are left)")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                   help="override a YAML value, as for yrmpi sweep (passed on to the job)")
    p.add_argument("--per-job-output", action="store_true",
                   help="give each submission its own folder: OUTPUT/job-$SLURM_JOB_ID (kept across requeues)")
    p.add_argument("--max-requeues", type=_positive, default=10, metavar="K",
                   help="stop requeueing after K requeues (default 10)")
    p.add_argument("-o", "--output", dest="script", metavar="FILE",
                   help="where to write the script (default: <job name>.sbatch; '-' prints it)")
    p.add_argument("--submit", action="store_true", help="run sbatch on the written script and print the job id")
    return p


def slurm_command(argv: list[str]) -> int:
    """`yrmpi slurm FILE.yaml ...`; returns the exit code (2 for a config or request mistake)."""
    from ..api.spmd import alias_yr
    from ..sweep.config import SweepConfigError, expand
    from ..sweep.runner import SweepOptions, load_config, todo_for

    ns = _parser().parse_args(argv)
    alias_yr()  # entry files may say `import yr`; loading the sweep imports its entry
    try:
        limit = parse_time(ns.time)
        config = load_config(SweepOptions(file=ns.file, overrides=ns.overrides, max_concurrent=ns.max_concurrent))
        experiments = expand(config)
        todo = todo_for(config, experiments, fresh=False)
        sizing = size_sweep(config, len(todo), len(experiments), nodes=ns.nodes, tasks_per_node=ns.tasks_per_node,
                            cpus_per_task=ns.cpus_per_task, mem_per_cpu=ns.mem_per_cpu, custom=ns.resources)
        # The warning must leave the sweep its grace period plus time to journal and requeue. Slurm
        # checks time limits once a minute and may warn up to 60 s early: a job shorter than
        # lead + 2 minutes could be warned while its ranks are still starting (and die of it).
        lead = max(SIGNAL_LEAD_S, math.ceil(config.grace_period) + 60)
        if limit < lead + WARNING_SLACK_S:
            raise SlurmError(f"--time {ns.time} ({limit} s) leaves no room for the {lead} s warning (grace_period "
                             f"{config.grace_period:g} s + 60 s, at least {SIGNAL_LEAD_S} s) plus {WARNING_SLACK_S} "
                             f"s, as Slurm may warn up to a minute early; ask for at least {lead + WARNING_SLACK_S} s")
    except (SweepConfigError, SlurmError) as exc:
        print(f"yrmpi slurm: {exc}", file=sys.stderr)
        return 2
    if not todo:
        print(f"yrmpi slurm: note: every experiment of {config.name} in {Path(config.output).absolute()} is done; "
              "the job would only write the report", file=sys.stderr)
    sweep_argv = [str(Path(ns.file).absolute())]
    for item in ns.overrides:
        sweep_argv += ["--set", item]
    if ns.max_concurrent is not None:
        sweep_argv += ["--max-concurrent", str(ns.max_concurrent)]
    if ns.per_job_output:
        sweep_argv += ["-o", f"{Path(config.output).absolute()}/job-${{SLURM_JOB_ID}}"]
    job_name = ns.job_name or f"yrmpi-{config.name}"
    text = render_sweep(
        sizing=sizing, sweep_argv=sweep_argv, time_limit=ns.time, signal_lead=lead, job_name=job_name,
        workdir=os.getcwd(), launcher=ns.launcher, flavor=mpi_flavor(), partition=ns.partition,
        account=ns.account, custom=ns.resources, max_requeues=ns.max_requeues,
        command=" ".join(["yrmpi slurm", *map(shlex.quote, argv)]))
    if ns.per_job_output:  # keep $SLURM_JOB_ID for bash: quote that argument with double quotes
        text = text.replace(shlex.quote(sweep_argv[-1]), '"' + sweep_argv[-1] + '"')
    if ns.script == "-":
        if ns.submit:
            print("yrmpi slurm: --submit needs a file; drop '-o -'", file=sys.stderr)
            return 2
        sys.stdout.write(text)
        return 0
    path = Path(ns.script or f"{job_name}.sbatch")
    path.write_text(text)
    path.chmod(0o755)
    print(f"wrote {path}: {sizing.ntasks} ranks (1 driver + {sizing.ntasks - 1} host ranks), "
          f"{sizing.concurrency} experiments at once, --time {ns.time}, launcher {ns.launcher}")
    for line in sizing.lines:
        print(f"  {line}")
    if ns.submit:
        try:
            job = submit(path)
        except (SlurmError, subprocess.SubprocessError, OSError) as exc:
            print(f"yrmpi slurm: {exc}", file=sys.stderr)
            return 1
        print(f"submitted batch job {job}")
        print(job)
    return 0


# ------------------------------------------------------------------------- plain job entry point
def _launcher_rank() -> int:
    for name in ("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"):
        raw = os.environ.get(name)
        if raw and raw.isdigit():
            return int(raw)
    return 0


def job_main(argv: list[str]) -> int:
    """`python -m yrmpi.slurm job.py [args]`: `python -m yrmpi job.py` with SIGUSR1 made safe.

    The batch script passes Slurm's warning (SIGUSR1) to every rank. Python's default for it is
    to die, so host ranks ignore it, and rank 0 gets a handler that only logs; a job script that
    wants the warning installs its own handler (e.g. checkpoint, then sys.exit(75) to be requeued).
    """
    from ..api.spmd import run_script

    if not argv:
        print("usage: python -m yrmpi.slurm job.py [args]   (inside mpiexec/srun, as slurm/job.sbatch does)",
              file=sys.stderr)
        return 2
    if _launcher_rank() != 0:
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    else:
        def note(_signum: int, _frame: object) -> None:
            print("yrmpi: SIGUSR1 (Slurm's time-limit warning); this job script installs no handler for it, so "
                  "it runs on until the limit", file=sys.stderr, flush=True)

        signal.signal(signal.SIGUSR1, note)
    return run_script(argv[0], argv[1:])


if __name__ == "__main__":
    sys.exit(job_main(sys.argv[1:]))

