"""Instance output reaches the job's stdout line by line, prefixed with class, pid and rank.

The launcher (mpiexec, srun) already forwards every rank's stdout; this only adds the prefix
and makes sure lines from instances that share a rank do not interleave mid-line.
"""

from __future__ import annotations

import io
import os
import sys
import threading
from typing import TextIO

from ..core.rank import Rank


class PrefixingStream(io.TextIOBase):
    def __init__(self, raw: TextIO, here: Rank) -> None:
        self._raw = raw
        self._here = here
        self._partial = threading.local()
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        inst = self._here.current_instance()
        prefix = f"({inst.cls_name} pid={self._pid}, rank={self._here.rank}) " if inst else ""
        pending = getattr(self._partial, "text", "") + text
        *lines, rest = pending.split("\n")
        self._partial.text = rest
        if lines:
            out = "".join(f"{prefix}{line}\n" for line in lines)
            with self._lock:
                self._raw.write(out)
                self._raw.flush()
        return len(text)

    def flush(self) -> None:
        rest = getattr(self._partial, "text", "")
        if rest:
            self.write("\n")
        self._raw.flush()

    def fileno(self) -> int:
        return self._raw.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._raw.encoding


def install_prefixing(here: Rank) -> None:
    sys.stdout = PrefixingStream(sys.stdout, here)
    sys.stderr = PrefixingStream(sys.stderr, here)
