"""Sharding a dataset over a group's members."""

from __future__ import annotations

from typing import Any

from torch.utils.data.distributed import DistributedSampler

from .. import collective

__all__ = ["sampler"]


def sampler(dataset: Any, group: str | None = None, shuffle: bool = True, seed: int = 0,
            drop_last: bool = False) -> DistributedSampler:
    """A DistributedSampler for this member's share of `dataset` (by group rank and size, no torch
    default group needed). Call `set_epoch(e)` on it each epoch when shuffling, as with torch's."""
    return DistributedSampler(dataset, num_replicas=collective.size(group), rank=collective.rank(group),
                              shuffle=shuffle, seed=seed, drop_last=drop_last)
