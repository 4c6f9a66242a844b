"""yrmpi's diagnostics: the `yrmpi` logger, shown on stderr as `yrmpi: message`.

A job's stderr is what mpiexec and Slurm keep, so warnings go there by default, written to
whatever `sys.stderr` is at that moment (instance output is prefixed on host ranks). To
route them elsewhere, configure `logging.getLogger("yrmpi")` (its handlers, its level,
`propagate`) before `yr.init()`; yrmpi adds its own handler only to a logger that has none.
"""

from __future__ import annotations

import logging
import sys

log = logging.getLogger("yrmpi")


class _CurrentStderr(logging.StreamHandler):
    """A stream handler that writes to sys.stderr as it is when a record is emitted."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201 - logging's own attribute
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def install_default_handler() -> None:
    """Show yrmpi's warnings on stderr, unless the user configured the logger already."""
    if log.handlers:
        return
    handler = _CurrentStderr()
    handler.setFormatter(logging.Formatter("yrmpi: %(message)s"))
    log.addHandler(handler)
    log.propagate = False
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)
