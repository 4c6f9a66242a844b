"""Matching affinities (core/affinity.py, in wire form) against ranks' labels: pure logic.

A rank's labels: `hostname`, `node`, `rank`, the Slurm `partition` when the job runs under
Slurm, and the per-host and per-rank labels of `user`: the node's Slurm features
(`launch.slurm_node_labels`) and the user's (Config.labels / YRMPI_LABELS). An INSTANCE affinity looks at the labels
of the instances on the rank (scope POD) or on its node (scope NODE).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

Labels = Mapping[str, str]


def rank_labels(rank: int, node: str, user: Mapping) -> dict[str, str]:
    """The labels of one host rank. `user` holds labels for every rank (str -> str) and, under a
    hostname or a rank number as key, a dict of labels for those ranks only."""
    host = node.split("#")[0]
    labels = {"hostname": host, "node": node, "rank": str(rank)}
    partition = os.environ.get("SLURM_JOB_PARTITION")
    if partition:
        labels["partition"] = partition
    for key, value in user.items():
        if isinstance(value, Mapping):
            if str(key) in (host, node, str(rank)):
                labels.update({str(k): str(v) for k, v in value.items()})
        else:
            labels[str(key)] = str(value)
    return labels


def _holds(op: tuple, labels: Labels) -> bool:
    kind, key, values = op
    if kind == "LABEL_IN":
        return key in labels and labels[key] in values
    if kind == "LABEL_NOT_IN":
        return key not in labels or labels[key] not in values
    if kind == "LABEL_EXISTS":
        return key in labels
    return key not in labels  # LABEL_NOT_EXISTS


def _matches_any(ops: tuple, label_sets: Iterable[Labels]) -> bool:
    return any(all(_holds(op, labels) for op in ops) for labels in label_sets)


def satisfied(affinity: tuple, rank_label: Labels, instance_labels: Iterable[Labels]) -> bool:
    """Whether one affinity holds on a rank (its own labels; the labels of its instances)."""
    kind, typ, _scope, ops = affinity
    sets = [rank_label] if kind == "RESOURCE" else list(instance_labels)
    match = _matches_any(ops, sets)
    return not match if typ.endswith("_ANTI") else match


def required(affinities: tuple) -> tuple:
    return tuple(a for a in affinities if a[1].startswith("REQUIRED"))


def never_possible(affinities: tuple, all_rank_labels: Iterable[Labels]) -> str | None:
    """Why the required RESOURCE affinities can hold on no rank at all (labels never change), or None."""
    static = tuple(a for a in required(affinities) if a[0] == "RESOURCE")
    if not static:
        return None
    labels = list(all_rank_labels)
    if any(all(satisfied(a, lab, ()) for a in static) for lab in labels):
        return None
    shown = "; ".join(f"rank {lab['rank']}: " + ", ".join(f"{k}={v}" for k, v in sorted(lab.items()) if k != "rank")
                      for lab in labels[:4])
    return (f"no rank has labels that satisfy the required affinity {describe(static)} "
            f"(rank labels: {shown}{'; ...' if len(labels) > 4 else ''})")


def describe(affinities: tuple) -> str:
    parts = []
    for kind, typ, _scope, ops in affinities:
        conds = " and ".join(f"{key} {op.replace('LABEL_', '').lower()} {list(values) if values else ''}".strip()
                             for op, key, values in ops)
        parts.append(f"{typ} {kind}({conds})")
    return ", ".join(parts)
