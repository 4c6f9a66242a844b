"""The driver's completion record: how a launcher tells "the driver finished with code N" from
"the job was lost".

mpiexec's own exit code cannot say it: when a node dies, Open MPI's PRRTE ends the whole job and
exits 0 in about half the runs. So `launch.run` gives the job a path (`YRMPI_DRIVER_RESULT`),
rank 0 writes the driver's exit code there once the driver has finished (`record`), and the
launcher trusts that file, not mpiexec: a missing record means the job was lost before the driver
finished.

The path must be reachable from rank 0, which may run on another node: a multi-node launch puts
it in the launch directory (Open MPI runs remote ranks there, so it is on a shared file system),
a single-node one in the temporary directory; `YRMPI_RESULT_DIR` chooses another folder.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator

__all__ = ["RESULT_DIR_VAR", "RESULT_VAR", "read_record", "record", "record_path"]

RESULT_VAR = "YRMPI_DRIVER_RESULT"
RESULT_DIR_VAR = "YRMPI_RESULT_DIR"


def record(code: int) -> None:
    """Rank 0: the driver finished with `code`; written atomically (a launcher never reads half).
    A no-op without a launcher that asked for it, and on any other rank."""
    path = os.environ.get(RESULT_VAR)
    if not path:
        return
    from .environment import launcher_rank

    if launcher_rank() != 0:
        return
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w") as f:
            f.write(f"{int(code)}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # the launcher then reports the job as lost, with this reason
        import logging

        logging.getLogger("yrmpi").error("yrmpi: cannot write the driver's result to %s: %s", path, exc)


def read_record(path: str) -> int | None:
    """The driver's exit code from its record, or None if it never finished."""
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.lstrip("-").isdigit() else None


@contextlib.contextmanager
def record_path(env: dict[str, str], multi_node: bool) -> Iterator[str]:
    """A fresh path for one launch's record, set in `env`, removed afterwards."""
    folder = env.get(RESULT_DIR_VAR)
    if not folder:
        cwd = os.getcwd()
        folder = cwd if multi_node and os.access(cwd, os.W_OK) else tempfile.gettempdir()
    fd, path = tempfile.mkstemp(prefix=".yrmpi-driver-", suffix=".result", dir=folder)
    os.close(fd)
    os.unlink(path)  # exists only once the driver has finished
    env[RESULT_VAR] = path
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
