"""What `ray.init` set for this job, as every rank sees it: the namespace travels to the instances
in their environment (`Config.custom_envs`), the ranks from this process's yrmpi rank."""

from __future__ import annotations

import os

import yrmpi as yr
from yrmpi.core import rank as _rank

NAMESPACE_ENV = "YRMPI_RAY_NAMESPACE"
_driver = {"namespace": None}


def namespace() -> str:
    """The job's namespace: the one `ray.init(namespace=...)` gave, in the driver and in instances."""
    ns = _driver["namespace"]
    return ns if ns is not None else os.environ.get(NAMESPACE_ENV, "")


def set_namespace(ns: str | None) -> None:
    _driver["namespace"] = ns


def ensure_initialized() -> None:
    """Ray starts a local runtime at the first `.remote()` / `ray.get` when `ray.init` was not called."""
    if not yr.is_initialized():
        from . import init

        init()


def own_rank() -> int:
    return _rank.current().rank


def host_ranks() -> list[int]:
    size = _rank.current().size
    return list(range(1, size))
