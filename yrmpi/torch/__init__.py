"""PyTorch for a supervisor's workers (the optional extra `torch`: `pip install yrmpi[torch]`).

Inside an instance method of a group's members:

    pg = yrmpi.torch.process_group()       # a torch ProcessGroup for the group (gloo / NCCL)
    model = yrmpi.torch.ddp(model)         # DistributedDataParallel over it, on this member's device
    loader = DataLoader(ds, sampler=yrmpi.torch.sampler(ds))   # this member's shard

The rendezvous runs over the group's MPI communicator (`store.MPIStore`): no port of yrmpi's
own. See docs/torch.md.
"""

from __future__ import annotations

from typing import Any

from .data import sampler
from .group import destroy, device, process_group, track
from .store import MPIStore

__all__ = ["MPIStore", "ddp", "destroy", "device", "process_group", "sampler"]


def ddp(model: Any, group: str | None = None, **kwargs: Any) -> Any:
    """`model` moved to this member's device and wrapped in DistributedDataParallel over the
    group's process group (`kwargs` go to DistributedDataParallel). Collective, like
    process_group(); wrap again after the group changed (the old process group is gone)."""
    from torch.nn.parallel import DistributedDataParallel

    dev = device()
    model = model.to(dev)
    pg = process_group(group)
    if dev.type == "cuda":
        kwargs.setdefault("device_ids", [dev.index])
        kwargs.setdefault("output_device", dev.index)
    wrapped = DistributedDataParallel(model, process_group=pg, **kwargs)
    track(pg, wrapped)
    return wrapped
