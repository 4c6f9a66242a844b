"""Crash-safe file writes shared by the journal and the report.

A sweep can be killed at any instant (Slurm time limit, node failure), so every file a
later ``--resume`` or ``yrmpi sweep --report`` reads is either the old complete version or
the new complete version, never half of one.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

# Files are created like `open(path, "w")` would (0666 less the umask) and never through a
# symlink planted where the file should be.
_CREATE = os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class NotARegularFile(OSError):
    """A path a sweep writes to holds a directory, a device, a FIFO or a symlink."""


def open_append(path: str | os.PathLike) -> int:
    """An fd for appending to ``path`` (created 0666 & ~umask), refusing symlinks and non-files.

    O_NONBLOCK so a FIFO planted there fails at once instead of blocking the sweep.
    """
    fd = os.open(os.fspath(path), os.O_RDWR | os.O_APPEND | os.O_NONBLOCK | _CREATE, 0o666)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotARegularFile(f"{path} is not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_all(fd: int, data: bytes) -> None:
    """One write call for the whole line (the journal's torn-line guarantee), then the rest."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def fsync_dir(directory: str | os.PathLike) -> None:
    """Persist a directory entry (a created or renamed file) so it survives a power loss."""
    try:
        fd = os.open(os.fspath(directory), os.O_RDONLY)
    except OSError:  # some filesystems / platforms cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` via tmp file + fsync + rename; return the path.

    Readers see either the previous file or the complete new one.  The file gets the
    umask's permissions; a symlink at ``path`` is replaced, never followed.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    while True:
        tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_EXCL | _CREATE, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(target.parent)
    return target
