"""Slurm node features become affinity labels of the ranks on those nodes."""

from __future__ import annotations

import os
import stat

from yrmpi import launch
from yrmpi.scheduling import affinity

SCONTROL = """#!/bin/sh
echo "NodeName=node7 Arch=x86_64 CoresPerSocket=8 AvailableFeatures=gpu,ib ActiveFeatures=gpu,ib NodeHostName=node7"
echo "NodeName=node8 Arch=x86_64 AvailableFeatures=(null) ActiveFeatures=(null) NodeHostName=node8"
"""


def test_slurm_node_features_are_labels(tmp_path, monkeypatch):
    fake = tmp_path / "scontrol"
    fake.write_text(SCONTROL)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "node[7-8]")
    labels = launch.slurm_node_labels()
    assert labels == {"node7": {"features": "gpu,ib", "feature:gpu": "1", "feature:ib": "1"}}
    on7 = affinity.rank_labels(3, "node7#1", labels)
    on8 = affinity.rank_labels(5, "node8#4", labels)
    needs_ib = ("RESOURCE", "REQUIRED", "POD", (("LABEL_EXISTS", "feature:ib", ()),))
    assert affinity.satisfied(needs_ib, on7, []) and not affinity.satisfied(needs_ib, on8, [])


def test_no_slurm_no_labels(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert launch.slurm_node_labels() == {}
