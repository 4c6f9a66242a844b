"""Rendering one sweep's batch script: #SBATCH lines, the sizing as comments, the bash blocks."""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..launch import fault_tolerance_level
from .launcher import launcher_line
from .templates import CAPACITY_BLOCK, RUN_BLOCK

if TYPE_CHECKING:
    from .sizing import Sizing

__all__ = ["render_sweep"]


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
        *([f"#SBATCH --gpus-per-node={sizing.gpus_per_node}",
           f"##SBATCH --gres=gpu:{sizing.gpus_per_node}   # the same request on a Slurm without --gpus-per-node"]
          if sizing.gpus_per_node else []),
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

