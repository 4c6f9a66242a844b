"""`ray.util.scheduling_strategies`: node affinity maps onto yrmpi's rank labels; placement groups
are out of scope (yrmpi's resource groups are the alternative)."""

from __future__ import annotations

from typing import Any

from ..exceptions import UnsupportedError

__all__ = ["NodeAffinitySchedulingStrategy", "PlacementGroupSchedulingStrategy"]


class NodeAffinitySchedulingStrategy:
    """Run on the node `node_id` (an id from `ray.nodes()` / `get_runtime_context().get_node_id()`);
    `soft=True`: prefer it, else anywhere."""

    def __init__(self, node_id: str, soft: bool, _spill_on_unavailable: bool = False,
                 _fail_on_unavailable: bool = False) -> None:
        self.node_id = node_id
        self.soft = soft


class PlacementGroupSchedulingStrategy:
    def __init__(self, placement_group: Any, placement_group_bundle_index: int = -1,
                 placement_group_capture_child_tasks: Any = None) -> None:
        raise UnsupportedError("placement groups are not supported by yrmpi.ray: use yrmpi's resource groups "
                               "(yr.create_resource_group and InvokeOptions.resource_group_options), see docs/ray.md")
