"""What an experiment's supervisor gets besides its params: ``run(params, trial)``.

Kept in its own small module (no YAML, no MPI) because every host rank unpickles it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core.options import InvokeOptions

__all__ = ["Trial"]


@dataclass(frozen=True)
class Trial:
    """One attempt of one experiment, as the sweep runner hands it to the supervisor.

    The supervisor creates its own ``workers`` workers with ``worker_options`` (built from
    ``resources.worker``), so the sweep's capacity plan matches what really gets placed.
    ``attempt`` counts starts of this experiment (1 on the first run; retries and resumes
    after an interruption add one), so a trainer can pick up a checkpoint when it is > 1.
    """

    id: str  # stable experiment id (hash of params + seed)
    seed: int
    workers: int
    worker_options: InvokeOptions = field(default_factory=InvokeOptions)
    attempt: int = 1
