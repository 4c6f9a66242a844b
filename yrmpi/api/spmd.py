"""Running a driver script SPMD-style: rank 0 runs it as __main__, the other ranks serve."""

from __future__ import annotations

import importlib.util
import os
import runpy
import sys
import traceback
from typing import Any, Callable

from .. import collective, launch
from .. import runtime as _rt
from .functions import end_rounds, finalize, serve_rounds

# The submodules yr code imports from (`from yr.exception import YRInvokeError`, ...).
YR_SUBMODULES = ("exception", "object_ref", "config", "affinity", "fcc", "group", "resource_group")


def alias_yr() -> None:
    """Let job code say `import yr` when no other package of that name is installed."""
    if "yr" not in sys.modules and importlib.util.find_spec("yr") is None:
        sys.modules["yr"] = sys.modules["yrmpi"]  # (imported: this module is part of it)
        sys.modules["yr.collective"] = collective  # `import yr.collective`: the same module
        for name in YR_SUBMODULES:
            try:
                module = importlib.import_module(f"yrmpi.{name}")
            except ImportError:
                continue
            sys.modules[f"yr.{name}"] = module


def run_script(path: str, args: list[str]) -> int:
    """The SPMD entry point; returns this rank's exit code."""
    alias_yr()
    if not os.path.isfile(path):
        print(f"yrmpi: no such script: {path}", file=sys.stderr)
        launch.record(2)  # (rank 0: the launcher reports the driver's code, not a lost job)
        return 2
    if not launch.under_mpi():  # `python -m yrmpi job.py` on a laptop: launch ourselves
        from ..core.options import Config

        n = Config().resolved().num_ranks
        return launch.run(launch.command(n, [sys.executable, "-m", "yrmpi", path, *args]))

    # Every rank can import modules next to the script (classes there travel by reference).
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))

    def driver() -> None:
        sys.argv = [path, *args]
        runpy.run_path(path, run_name="__main__")

    return spmd(driver)


def spmd(driver: Callable[[], Any], host_setup: Callable[[], None] | None = None) -> int:
    """Rank 0 runs `driver` (its int result is the exit code), the other ranks serve instances
    until it finishes; one code path for scripts and sweeps. Returns this rank's exit code."""
    from mpi4py import MPI

    world = MPI.COMM_WORLD
    _rt.require_hosts(world)
    if world.Get_rank() != 0:
        if host_setup is not None:
            host_setup()
        serve_rounds(world)  # (as many runtimes as the driver's init -> finalize rounds)
        return 0
    code = 0
    try:
        result = driver()
        code = result if isinstance(result, int) and not isinstance(result, bool) else 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        if not _rt.ever_started():  # the driver never called yr.init(): release the hosts
            _rt.Runtime(world, None).start()
        finalize()
        end_rounds()
    sys.stdout.flush()
    launch.record(code)  # the driver finished: its code is the job's, whatever mpiexec says
    return code
