"""`ray.tune` is out of scope in yrmpi.ray (docs/ray.md says why and what to use instead)."""

from ._scope import OUT_OF_SCOPE

raise ImportError(f"ray.tune: {OUT_OF_SCOPE['tune']} (see docs/ray.md)")
