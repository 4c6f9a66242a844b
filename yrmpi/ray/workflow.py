"""`ray.workflow` is out of scope in yrmpi.ray (docs/ray.md says why and what to use instead)."""

from ._scope import OUT_OF_SCOPE

raise ImportError(f"ray.workflow: {OUT_OF_SCOPE['workflow']} (see docs/ray.md)")
