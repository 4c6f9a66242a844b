"""`yrmpi sweep FILE.yaml` and `yrmpi report DIR`: argument parsing, dry runs, launching.

Without a launcher, `yrmpi sweep` checks the config, sizes the job, and runs itself under
mpiexec (like `python job.py`); under mpiexec/srun every rank runs the same command, rank 0
drives the sweep and the others host instances (script.spmd, as for job scripts).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Callable

from .. import launch
from ..core.errors import YRRuntimeError
from ..core.log import install_default_handler
from ..launch import EXIT_CODES, EXIT_CONFIG, EXIT_INTERRUPTED, EXIT_LOST, EXIT_OK, EXIT_OUTPUT
from .config import SweepConfigError, load
from .journal import check_fingerprint, experiments_of, fold, read_journal, resume_plan, write_resolved_config
from .output import output_error
from .report import report
from .runner import (
    SweepOptions,
    drive,
    dry_run_ranks,
    exit_code,
    fresh_requested,
    ignore_stop_signals,
    launcher_rank,
    load_config,
    open_output,
    plan_text,
    prepare_output,
    size_launch,
    summarize,
    sweep_experiments,
    todo_for,
    work_left,
)

__all__ = ["int_at_least", "report_command", "sweep_command"]

launch_log = logging.getLogger("yrmpi")


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= minimum (the sweep's and the slurm command's options)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


def _sweep_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="yrmpi sweep",
        description="Run the experiments of a sweep YAML on MPI ranks: one supervisor plus its workers per "
        "experiment, as many at once as the ranks hold. Rerunning resumes from the output folder's journal. "
        "Exit codes: 0 all finished, 2 bad input (nothing ran), 3 some experiments failed, 69 the job was lost "
        "(rerun to resume), 73 the output folder failed during the run, 75 stopped with work left (rerun to "
        "resume). See docs/sweeps.md.")
    p.add_argument("file", help="the sweep YAML")
    p.add_argument("--dry-run", action="store_true", help="print the plan (experiments, ranks, waves) and exit")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true",
                      help="continue from the output folder's journal (the default when it has one)")
    mode.add_argument("--fresh", action="store_true",
                      help="start over; an earlier run's files move to OUTPUT/previous-<time>/")
    p.add_argument("--max-concurrent", type=int_at_least(1), metavar="N", help="run at most N experiments at once")
    p.add_argument("-o", "--output", metavar="DIR", help="output folder (overrides the YAML's output)")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                   help="override a YAML value, e.g. --set workers=2 --set params.lr=[0.1,0.01] (repeatable)")
    p.add_argument("-n", "--np", type=int_at_least(2), metavar="N",
                   help="ranks to launch (default: what the plan needs); "
                   "ignored under mpiexec/srun")
    p.add_argument("--mpiexec", default=None, help="mpiexec to use when launching (default: the venv's)")
    launch.add_host_options(p)
    p.add_argument("--mpi-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for mpiexec (repeatable)")
    return p


def _options(ns: argparse.Namespace) -> SweepOptions:
    return SweepOptions(file=ns.file, overrides=ns.overrides, output=ns.output,
                        max_concurrent=ns.max_concurrent, fresh=ns.fresh, resume=ns.resume)


def _dry_run(opts: SweepOptions, np: int | None) -> int:
    if launcher_rank() != 0:  # under mpiexec/srun only rank 0 prints
        return EXIT_OK
    config = load_config(opts)
    experiments = sweep_experiments(config, fresh_requested(opts))
    if not fresh_requested(opts):
        check_fingerprint(config.output, config.to_dict())
    todo = todo_for(config, experiments, fresh_requested(opts))
    world = dry_run_ranks() if launch.under_mpi() else None
    ranks, plan = size_launch(config, max(work_left(config, experiments, todo), 1), ranks=world or np)
    print(plan_text(config, experiments, todo, plan, max_rows=None))
    how = "this job's" if world else ("-n" if np else "a local launch:")
    print(f"{how} {ranks} ranks (1 driver + {ranks - 1} host ranks); output {Path(config.output).absolute()}")
    if len(todo) != len(experiments):
        print(f"resuming: {len(experiments) - len(todo)} of {len(experiments)} experiments are done "
              "(finished, or failed with no retries left)")
    return EXIT_OK


def _launch(opts: SweepOptions, ns: argparse.Namespace, argv: list[str]) -> int:
    """Check and size on this machine, then run the same command under mpiexec.

    This process holds the output folder's lock for the whole MPI job (the kernel drops it if
    the process dies), so a second `yrmpi sweep` on the folder fails at once with one line.
    """
    config = load_config(opts)
    experiments = sweep_experiments(config, fresh_requested(opts))
    lock = open_output(config, experiments, opts)
    try:
        todo = todo_for(config, experiments, fresh_requested(opts))
        if not work_left(config, experiments, todo):  # nothing to run: report without starting MPI
            out, records, warnings = prepare_output(config, opts)
            for warning in warnings:
                launch_log.warning("warning: %s", warning)
            print(f"sweep {config.name}: nothing left to run in {out}")
            write_resolved_config(out, config.to_dict())
            return summarize(config, experiments, out, records)
        ranks, _ = size_launch(config, work_left(config, experiments, todo), ranks=ns.np)
        hosts = launch.host_flags(ns.host, ns.hostfile)
        cmd = launch.command(ranks, [sys.executable, "-m", "yrmpi", "sweep", *argv], mpiexec=ns.mpiexec,
                             extra=[*hosts, *ns.mpi_arg])
        where = f"on {ns.host or ns.hostfile}" if hosts else "on this machine"
        print(f"yrmpi sweep: launching {ranks} ranks {where} (1 driver + {ranks - 1} host ranks)", flush=True)
        lock.export()
        # Open MPI's mpiexec ends the job on SIGTERM but hands SIGUSR1 to the ranks: ask for a graceful stop.
        rc = launch.run(cmd, translate={signal.SIGTERM: signal.SIGUSR1})
        return _job_code(rc, config, experiments)
    finally:
        lock.release()


def _job_code(rc: int, config, experiments) -> int:  # noqa: ANN001 - SweepConfig, list[Experiment]
    """The code of a launched job: the driver's own when it gave one of the sweep's codes,
    else what the journal says is left (mpiexec's failures, rank 0 killed, a traceback; and
    "lost", which the launcher says when the driver recorded no end: its journal may be done)."""
    if rc in EXIT_CODES and rc != EXIT_LOST:
        return rc
    records, _ = read_journal(Path(config.output))
    if config.search:
        experiments = experiments_of(config, records)
    if not work_left(config, experiments, resume_plan(experiments, fold(records), config.retries)):
        return exit_code(config, experiments, records)
    if rc > 128:  # mpiexec (or the driver) ended by signal rc - 128: stopped, with work left
        code, what = EXIT_INTERRUPTED, f"ended by signal {rc - 128}"
    else:
        code, what = EXIT_LOST, f"ended with code {rc} (rank 0, a node or MPI failed; see above)"
    launch_log.warning("yrmpi sweep: the MPI job %s with experiments left; run the same command again to "
                       "resume (exit code %d)", what, code)
    return code


def sweep_command(argv: list[str]) -> int:
    """`yrmpi sweep ...`; returns the exit code."""
    from ..api.spmd import alias_yr, spmd

    ns = _sweep_parser().parse_args(argv)
    opts = _options(ns)
    alias_yr()  # entry files may say `import yr`
    install_default_handler()
    try:
        if ns.dry_run:
            return _dry_run(opts, ns.np)
        if launch.under_mpi():
            return spmd(lambda: drive(opts), host_setup=ignore_stop_signals)
        return _launch(opts, ns, argv)
    except SweepConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    except OSError as exc:  # the output folder failed after it was checked (a full disk)
        where = Path(os.fsdecode(exc.filename)) if exc.filename else Path(opts.output or ".").absolute()
        print(f"yrmpi sweep: {output_error(where, exc, 'write to')}", file=sys.stderr)
        return EXIT_OUTPUT
    except YRRuntimeError as exc:  # no mpiexec, one rank under srun, ...
        print(f"yrmpi sweep: {exc}", file=sys.stderr)
        return EXIT_LOST


def report_command(argv: list[str]) -> int:
    """`yrmpi report DIR|FILE.yaml`: the ranked table of a sweep from its journal (no MPI)."""
    p = argparse.ArgumentParser(
        prog="yrmpi report",
        description="Print the ranked table of a sweep from its output folder (config.yaml + journal.jsonl); "
        "safe while the sweep runs.")
    p.add_argument("folder", help="a sweep's output folder, or its YAML file (its output: is used)")
    ns = p.parse_args(argv)
    target = Path(ns.folder)
    try:
        if target.is_file() and target.suffix in (".yaml", ".yml"):
            target = Path(load(target, check_entry=False).output)
        print(report(target), flush=True)
    except SweepConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    except BrokenPipeError:  # `yrmpi report DIR | head`: the reader has seen enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_OK
