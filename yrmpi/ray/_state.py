"""What `ray.init` set for this job, as every rank sees it: the namespace is kept in the job's KV
store (instances on other ranks read it once), the ranks come from this process's yrmpi rank."""

from __future__ import annotations

import yrmpi as yr
from yrmpi.core import rank as _rank

NAMESPACE_KEY = "\x00yrmpi-ray/namespace"
_namespace: dict[str, str] = {}  # job id -> the namespace ray.init gave


def namespace() -> str:
    """The job's namespace: the one `ray.init(namespace=...)` gave, in the driver and in instances."""
    job = str(_rank.current().settings["job_id"])
    if job not in _namespace:
        if _rank.current().rank == 0:  # the driver: ray.init would have set it
            return ""
        try:
            _namespace[job] = yr.kv_read(NAMESPACE_KEY, timeout=5).decode()
        except (TimeoutError, RuntimeError):  # yr.init without ray.init: the anonymous namespace
            _namespace[job] = ""
    return _namespace[job]


def set_namespace(ns: str) -> None:
    """In the driver, right after yr.init: the namespace for this job, on every rank."""
    _namespace[str(_rank.current().settings["job_id"])] = ns
    yr.kv_write(NAMESPACE_KEY, ns.encode())


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
