"""Crash-safe file writes shared by the journal and the report.

A sweep can be killed at any instant (Slurm time limit, node failure), so every file a
later ``--resume`` or ``yrmpi sweep --report`` reads is either the old complete version or
the new complete version, never half of one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


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

    Readers see either the previous file or the complete new one.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
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
