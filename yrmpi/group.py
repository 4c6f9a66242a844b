"""`yr.group`: where yr code imports `Group` from."""

from .api.groups import Group
from .core.options import GroupOptions

__all__ = ["Group", "GroupOptions"]
