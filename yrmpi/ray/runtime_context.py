"""`ray.get_runtime_context()`: the job, node, actor and accelerators of the calling code."""

from __future__ import annotations

import os
import socket
from typing import Any

import yrmpi as yr
from yrmpi.core import rank as _rank

from . import _state
from .exceptions import UnsupportedError

__all__ = ["RuntimeContext", "get_runtime_context"]

_node: dict[int, str] = {}


def _node_of(rank: int) -> str:
    """The node id of a rank as `ray.nodes()` names it (yrmpi's node: host#lowest rank on it)."""
    if rank not in _node:
        for row in yr.resources()["ranks"]:
            _node[row["rank"]] = row["node"]
        _node.setdefault(rank, f"{socket.gethostname()}#0")
    return _node[rank]


class RuntimeContext:
    """What the code that asks runs in: the driver, a task or an actor."""

    def get_job_id(self) -> str:
        return str(_rank.current().settings["job_id"])

    @property
    def job_id(self) -> str:
        return self.get_job_id()

    def get_node_id(self) -> str:
        here = _rank.current()
        if here.rank == 0:  # the driver runs on rank 0, which hosts nothing: its node is rank 1's if shared
            host = socket.gethostname()
            for row in yr.resources()["ranks"]:
                if row["node"].rsplit("#", 1)[0] == host:
                    return row["node"]
            return f"{host}#0"
        return _node_of(here.rank)

    @property
    def node_id(self) -> str:
        return self.get_node_id()

    def _instance(self) -> Any:
        return _rank.current().current_instance()

    def get_actor_id(self) -> str | None:
        inst = self._instance()
        if inst is None or getattr(inst, "oneshot", False):
            return None
        return f"{inst.iid:x}"

    @property
    def actor_id(self) -> str | None:
        return self.get_actor_id()

    def get_task_id(self) -> str | None:
        inst = self._instance()
        return None if inst is None else f"{inst.iid:x}"

    def get_worker_id(self) -> str:
        return f"{_rank.current().rank}-{os.getpid()}"

    def get_actor_name(self) -> str | None:
        return None

    @property
    def namespace(self) -> str:
        return _state.namespace()

    @property
    def was_current_actor_reconstructed(self) -> bool:
        return False

    def get_accelerator_ids(self) -> dict[str, list[str]]:
        """The GPUs this rank was given (yrmpi binds each host rank to its share of the node's)."""
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        ids = [] if visible.strip() in ("", "-1") else [v.strip() for v in visible.split(",") if v.strip()]
        return {"GPU": ids}

    def get_assigned_resources(self) -> dict[str, float]:
        return {}

    @property
    def gcs_address(self) -> str:
        raise UnsupportedError("yrmpi.ray has no GCS: the job's ranks talk over MPI (see docs/ray.md)")

    def get(self) -> dict[str, Any]:
        out = {"job_id": self.get_job_id(), "node_id": self.get_node_id(), "namespace": self.namespace}
        if self.get_actor_id() is not None:
            out["actor_id"] = self.get_actor_id()
        return out


_context = RuntimeContext()


def get_runtime_context() -> RuntimeContext:
    _state.ensure_initialized()
    return _context
