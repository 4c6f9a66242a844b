"""The `yrmpi` command: run a job, and (in later modules) sweeps, reports and Slurm scripts."""

from __future__ import annotations

import argparse
import sys

from . import launch

COMMANDS = ("run",)


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="yrmpi run", description="Launch a yr-style job script on N MPI ranks on this machine "
        "(rank 0 drives, the others host instances).")
    parser.add_argument("-n", "--np", type=int, default=None,
                        help="number of ranks (default: YRMPI_NUM_RANKS or 9)")
    parser.add_argument("--mpiexec", default=None, help="mpiexec to use (default: the venv's)")
    parser.add_argument("--mpi-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for mpiexec (repeatable)")
    parser.add_argument("--dry-run", action="store_true", help="print the launch line and exit")
    parser.add_argument("script")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    ns = parser.parse_args(argv)
    from .options import Config

    n = ns.np if ns.np is not None else Config().resolved().num_ranks
    cmd = launch.command(n, [sys.executable, "-m", "yrmpi", ns.script, *ns.args],
                         mpiexec=ns.mpiexec, extra=ns.mpi_arg)
    if ns.dry_run:
        print(" ".join(cmd))
        return 0
    return launch.run(cmd)


def main(argv: list[str] | None = None, module_entry: bool = False) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: yrmpi run [-n N] script.py [args]   launch a job on N ranks\n"
              "       python -m yrmpi script.py [args]     inside mpiexec/srun (rank 0 drives)")
        return 0 if argv else 2
    if argv[0] == "run":
        return _run(argv[1:])
    if module_entry:
        from .script import run_script

        return run_script(argv[0], argv[1:])
    print(f"yrmpi: unknown command {argv[0]!r}; try: {', '.join(COMMANDS)}", file=sys.stderr)
    return 2
