"""`yr.resource_group`: where yr code imports `ResourceGroup` from."""

from .api.groups import ResourceGroup, create_resource_group, remove_resource_group

__all__ = ["ResourceGroup", "create_resource_group", "remove_resource_group"]
