"""`yr.object_ref`: where yr code imports `ObjectRef` from."""

from .core.refs import ObjectRef

__all__ = ["ObjectRef"]
