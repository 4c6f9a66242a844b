"""The `yrmpi` command: a small dispatcher; each subcommand lives with the code it drives."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from . import launch


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="yrmpi run", description="Launch a yr-style job script on N MPI ranks, on this machine or on "
        "the nodes given with --host/--hostfile (rank 0 drives, the others host instances).")
    parser.add_argument("-n", "--np", type=int, default=None,
                        help="number of ranks (default: YRMPI_NUM_RANKS or 9)")
    parser.add_argument("--mpiexec", default=None, help="mpiexec to use (default: the venv's)")
    launch.add_host_options(parser)
    parser.add_argument("--mpi-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for mpiexec (repeatable)")
    parser.add_argument("--dry-run", action="store_true", help="print the launch line and exit")
    parser.add_argument("script")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    ns = parser.parse_args(argv)
    from .core.options import Config

    n = ns.np if ns.np is not None else Config().resolved().num_ranks
    hosts = launch.host_flags(ns.host, ns.hostfile)
    # An absolute script path: remote nodes start the ranks in this directory, not with this shell's.
    script = os.path.abspath(ns.script) if hosts and os.path.exists(ns.script) else ns.script
    cmd = launch.command(n, [sys.executable, "-m", "yrmpi", script, *ns.args],
                         mpiexec=ns.mpiexec, extra=[*hosts, *ns.mpi_arg])
    if ns.dry_run:
        if not launch.single_node(cmd) and launch.flavor(cmd[0]) == "openmpi":  # what launch.run adds
            cmd = [cmd[0], *launch.forward_flags(launch.launch_env()), *cmd[1:]]
        print(" ".join(cmd))
        return 0
    return launch.run(cmd)


def _sweep(argv: list[str]) -> int:
    from .sweep.cli import sweep_command

    return sweep_command(argv)


def _report(argv: list[str]) -> int:
    from .sweep.cli import report_command

    return report_command(argv)


def _slurm(argv: list[str]) -> int:
    from .slurm import slurm_command

    return slurm_command(argv)


def _bench(argv: list[str]) -> int:
    """`python -m benchmarks` from the source tree (benchmarks/ is not part of the installed package)."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    if not (root / "benchmarks" / "__main__.py").is_file():
        print(f"yrmpi bench: no benchmarks/ next to {root / 'yrmpi'}; run it from a source checkout "
              "(pip install -e '.[bench]')", file=sys.stderr)
        return 2
    return subprocess.call([sys.executable, "-m", "benchmarks", *argv], cwd=root)


# name -> (handler, one-line usage); handlers import their module lazily so `yrmpi run` stays light.
COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "run": (_run, "yrmpi run [-n N] [--host H] script.py   launch a job on N ranks"),
    "sweep": (_sweep, "yrmpi sweep FILE.yaml [--dry-run] ...  run (or resume) a YAML sweep"),
    "report": (_report, "yrmpi report DIR                       ranked table of a sweep's journal"),
    "slurm": (_slurm, "yrmpi slurm FILE.yaml [-o F] [--submit]  write (and submit) a Slurm batch script"),
    "bench": (_bench, "yrmpi bench [--quick] [--only A,B]       run benchmarks/ (writes benchmarks/results.md)"),
}


def _usage() -> str:
    lines = [("usage: " if i == 0 else "       ") + text for i, (_, text) in enumerate(COMMANDS.values())]
    lines.append("       python -m yrmpi script.py [args]       inside mpiexec/srun (rank 0 drives)")
    return "\n".join(lines)


def main(argv: list[str] | None = None, module_entry: bool = False) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    command = COMMANDS.get(argv[0])
    if command is not None:
        return command[0](argv[1:])
    if module_entry:
        from .api.spmd import run_script

        return run_script(argv[0], argv[1:])
    print(f"yrmpi: unknown command {argv[0]!r}; try: {', '.join(COMMANDS)}", file=sys.stderr)
    return 2
