"""The one error of `yrmpi slurm`."""

from __future__ import annotations

__all__ = ["SlurmError"]


class SlurmError(ValueError):
    """A request that cannot become a working batch script (message says what to change)."""
