"""`ray.job_submission` is out of scope in yrmpi.ray (docs/ray.md says why and what to use instead)."""

from ._scope import OUT_OF_SCOPE

raise ImportError(f"ray.job_submission: {OUT_OF_SCOPE['job_submission']} (see docs/ray.md)")
