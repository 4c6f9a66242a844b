"""The output folder before anything runs: usable at all, and used by one sweep at a time.

``check_output`` turns every way a folder can be unusable (a file or ``/dev/null`` in its
place, read-only, full, a ``journal.jsonl`` that is a directory or a planted symlink, a path
the kernel refuses) into one SweepConfigError line, so ``yrmpi sweep`` exits with 2 before
MPI starts instead of failing on rank 0 later.

``SweepLock`` is an advisory ``fcntl.flock`` on ``OUTPUT/.sweep.lock``.  The kernel drops it
when its process dies, so a killed run never leaves it stuck.  ``yrmpi sweep`` takes it in
the launcher process, which lives as long as the MPI job, and tells its ranks through
:data:`LOCK_ENV`; under mpiexec/srun without the launcher, rank 0 takes it itself.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import stat
import sys
import time
from pathlib import Path

from ._fs import NotARegularFile
from .config import SweepConfigError
from .journal import CONFIG_NAME, JOURNAL_NAME

__all__ = ["LOCK_ENV", "LOCK_NAME", "SweepLock", "check_output", "output_error", "space_needed"]

LOCK_NAME = ".sweep.lock"
LOCK_ENV = "YRMPI_SWEEP_LOCK"  # "<lock path>:<pid of the holder>", set by the launcher for its ranks
MIN_FREE = 16 << 20  # bytes: room for a journal, the results files and the plot
PER_EXPERIMENT = 16 << 10  # bytes of journal and results per experiment (and retry)
_FILES = (JOURNAL_NAME, CONFIG_NAME, "results.csv", "summary.json", "metric.png")


def output_error(out: Path, exc: BaseException, doing: str = "use") -> SweepConfigError:
    """One line for an OSError/ValueError met while using the output folder."""
    if isinstance(exc, NotARegularFile):
        reason = "not a regular file"
    elif isinstance(exc, OSError):
        reason = exc.strerror or str(exc)
        if exc.errno == errno.ELOOP:
            reason = "a symlink (refused: it could point anywhere)"
        if exc.filename and os.fspath(exc.filename) != os.fspath(out):
            reason += f": {os.fsdecode(exc.filename)}"
    else:
        reason = str(exc)
    text = f"{out}: (output): found a folder this sweep cannot {doing} ({reason}), expected a writable folder"
    return SweepConfigError(text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\n", " "))


def space_needed(n_experiments: int, retries: int = 0) -> int:
    return MIN_FREE + n_experiments * (retries + 1) * PER_EXPERIMENT


def check_output(output: str | os.PathLike, n_experiments: int = 0, retries: int = 0) -> Path:
    """Create the output folder if needed and prove it usable; its absolute path.

    Raises SweepConfigError (one line) when it is not a directory, cannot be written, has
    too little space, or one of the files the sweep writes there is a directory/symlink/FIFO.
    """
    try:
        out = Path(output).absolute()
    except (OSError, ValueError) as exc:
        raise output_error(Path(os.fsdecode(os.fspath(output)).replace("\0", "\\0")), exc) from None
    try:
        out.mkdir(parents=True, exist_ok=True)
        st = os.stat(out)
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(errno.ENOTDIR, "not a directory")
        for name in _FILES:
            try:
                mode = os.lstat(out / name).st_mode
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(mode):
                kind = ("a symlink" if stat.S_ISLNK(mode) else "a directory" if stat.S_ISDIR(mode)
                        else "not a regular file")
                raise SweepConfigError(
                    f"{out / name}: (output): found {kind} where the sweep keeps its {name}, "
                    "expected a regular file (move it away, or choose another output folder)")
        _probe(out)
        vfs = os.statvfs(out)
        free = vfs.f_bavail * vfs.f_frsize
        need = space_needed(n_experiments, retries)
        if free < need:
            raise SweepConfigError(
                f"{out}: (output): found {free / 2**20:.1f} MB free, expected at least "
                f"{need / 2**20:.1f} MB (16 MB + {n_experiments} experiments x {retries + 1} attempts "
                f"x 16 KB of journal and results)")
    except (OSError, ValueError) as exc:
        raise output_error(out, exc) from None
    return out


def _probe(out: Path) -> None:
    """Write, fsync and remove a small file: permission bits alone miss read-only mounts and quotas."""
    path = out / f".sweep-probe-{os.getpid()}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o666)
    try:
        os.write(fd, b"\0" * 4096)
        os.fsync(fd)
    finally:
        os.close(fd)
        try:
            os.unlink(path)
        except OSError:
            pass


class SweepLock:
    """``with SweepLock(out):`` holds the folder's advisory lock; one sweep per folder."""

    def __init__(self, out: str | os.PathLike) -> None:
        self.out = Path(out).absolute()
        self.path = self.out / LOCK_NAME
        self.fd: int | None = None
        self.inherited = False

    def acquire(self) -> SweepLock:
        """Take the lock or raise SweepConfigError naming the sweep that holds it."""
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as exc:
            raise output_error(self.out, exc, "lock") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_holder(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise output_error(self.out, exc, "lock") from None
            if self._held_by_launcher(holder):
                self.inherited = True
                return self
            raise SweepConfigError(
                f"{self.out}: (output): found another sweep running on this folder "
                f"({_describe(holder)}), expected one sweep per output folder at a time; wait for it "
                "to end, or choose another output folder (-o DIR)") from None
        try:
            os.ftruncate(fd, 0)
            info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                    "argv": sys.argv[1:]}
            os.write(fd, (json.dumps(info, default=str) + "\n").encode("utf-8", "backslashreplace"))
        except OSError:
            pass  # the lock is what matters; the note about its holder is a courtesy
        self.fd = fd
        return self

    def _held_by_launcher(self, holder: dict) -> bool:
        """True when the holder is the `yrmpi sweep` process that launched this MPI job."""
        raw = os.environ.get(LOCK_ENV, "")
        path, _, pid = raw.rpartition(":")
        return bool(path) and path == str(self.path) and pid.isdigit() and holder.get("pid") == int(pid)

    def export(self) -> None:
        """Tell the ranks of a job this process launches that it holds the lock for them."""
        os.environ[LOCK_ENV] = f"{self.path}:{os.getpid()}"

    def release(self) -> None:
        if self.fd is not None:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = None
        if os.environ.get(LOCK_ENV, "").startswith(f"{self.path}:"):
            os.environ.pop(LOCK_ENV, None)

    def __enter__(self) -> SweepLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> dict:
    try:
        raw = os.pread(fd, 4096, 0)
        info = json.loads(raw.decode("utf-8", "replace") or "{}")
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError, RecursionError):
        return {}


def _describe(holder: dict) -> str:
    if not holder.get("pid"):
        return "its process did not say who it is"
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    argv = holder.get("argv")
    cmd = " ".join(str(a) for a in argv) if isinstance(argv, list) else ""
    text = f"pid {holder.get('pid')} on {holder.get('host', '?')}, started {when}"
    return text + (f": yrmpi {cmd}" if cmd else "")
