"""`yrmpi slurm FILE.yaml`: argument parsing, and the steps from a sweep YAML to a written (or submitted) script."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import subprocess
import sys
from pathlib import Path

from .. import launch
from ..core.errors import YRRuntimeError
from ..sweep.cli import int_at_least
from .errors import SlurmError
from .launcher import LAUNCHERS
from .render import render_sweep
from .sbatch import submit
from .sizing import size_sweep
from .timelimit import DEFAULT_TIME, parse_time, signal_lead

__all__ = ["slurm_command"]

log = logging.getLogger("yrmpi")


def _installed_flavor() -> str:
    """The MPI flavour (launch.flavor) of the mpiexec `yrmpi run` would use here; 'unknown' without one."""
    try:
        return launch.flavor(launch.find_mpiexec())
    except YRRuntimeError:
        return "unknown"


def _custom_arg(text: str) -> dict[str, float]:
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict) or not all(isinstance(v, (int, float)) and v >= 0 for v in value.values()):
        raise argparse.ArgumentTypeError(f'expected a JSON object of amounts like {{"gpu": 1}}, got {text!r}')
    return value


_POSITIVE = int_at_least(1)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="yrmpi slurm",
        description="Write a Slurm batch script for a sweep: ranks sized from the sweep's capacity plan (host ranks "
        "for the wanted concurrency + 1 driver), the launcher line for the installed MPI, the warning signal and "
        "requeue-on-interrupt lines. See docs/slurm.md.")
    p.add_argument("file", help="the sweep YAML")
    p.add_argument("--nodes", type=_POSITIVE, metavar="N", help="nodes (default: let Slurm choose)")
    p.add_argument("--tasks-per-node", type=_POSITIVE, metavar="T",
                   help="ranks per node; with --nodes it fixes the rank count")
    p.add_argument("--cpus-per-task", type=_POSITIVE, default=1, metavar="C",
                   help="CPUs per rank (default 1); each host rank offers C x 1000 millicores")
    p.add_argument("--mem-per-cpu", type=_POSITIVE, metavar="MB",
                   help="memory per CPU in MB (default: enough that memory never limits before CPU)")
    p.add_argument("--resources", type=_custom_arg, metavar="JSON",
                   help='custom capacity per host rank, e.g. \'{"fpga": 1}\' (add the matching #SBATCH --gres '
                   "line yourself; for GPUs use --gpus-per-node)")
    p.add_argument("--gpus-per-node", type=_POSITIVE, metavar="G",
                   help="GPUs per node: writes #SBATCH --gpus-per-node=G and sizes the ranks so that the first G "
                   "host ranks of each node own one GPU each (--tasks-per-node defaults to G + 1)")
    p.add_argument("--time", default=DEFAULT_TIME, help=f"time limit (default {DEFAULT_TIME})")
    p.add_argument("--partition", metavar="P")
    p.add_argument("--account", metavar="A")
    p.add_argument("--job-name", metavar="NAME", help="job name (default: yrmpi-<sweep name>)")
    p.add_argument("--launcher", choices=LAUNCHERS, default="mpiexec",
                   help="mpiexec inside the allocation (default; ULFM with Open MPI) or srun direct launch")
    p.add_argument("--max-concurrent", type=_POSITIVE, metavar="N",
                   help="experiments at once (default: the YAML's max_concurrent, else all that are left)")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                   help="override a YAML value, as for yrmpi sweep (passed on to the job)")
    p.add_argument("--per-job-output", action="store_true",
                   help="give each submission its own folder: OUTPUT/job-$SLURM_JOB_ID (kept across requeues)")
    p.add_argument("--max-requeues", type=_POSITIVE, default=10, metavar="K",
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
        parse_time(ns.time)  # a wrong --time is reported before the sweep is loaded
        config = load_config(SweepOptions(file=ns.file, overrides=ns.overrides, max_concurrent=ns.max_concurrent))
        experiments = expand(config)
        todo = todo_for(config, experiments, fresh=False)
        sizing = size_sweep(config, len(todo), len(experiments), nodes=ns.nodes, tasks_per_node=ns.tasks_per_node,
                            cpus_per_task=ns.cpus_per_task, mem_per_cpu=ns.mem_per_cpu, custom=ns.resources,
                            gpus_per_node=ns.gpus_per_node)
        lead = signal_lead(ns.time, config.grace_period)
    except (SweepConfigError, SlurmError) as exc:
        print(f"yrmpi slurm: {exc}", file=sys.stderr)
        return 2
    if not todo:
        log.warning("yrmpi slurm: note: every experiment of %s in %s is done; the job would only write the report",
                    config.name, Path(config.output).absolute())
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
        workdir=os.getcwd(), launcher=ns.launcher, flavor=_installed_flavor(), partition=ns.partition,
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

