"""A torch process group per yrmpi worker group: built over the group's MPI communicator (the
rendezvous is an MPIStore, no port of yrmpi's own), re-formed when the group's membership
changes, aborted when the group fails, destroyed when the instance ends.

The process group is a `torch.distributed.ProcessGroup` object of its own (never the
process-wide default group), registered with torch's c10d bookkeeping the way torch registers
the groups it builds itself (`_new_process_group_helper`), so `DistributedDataParallel(...,
process_group=pg)` and `dist.all_reduce(t, group=pg)` take it.
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed import distributed_c10d as c10d

from .. import collective
from ..collective.calls import member_context
from ..collective.errors import CollectiveError
from .store import MPIStore

__all__ = ["destroy", "device", "process_group"]

log = logging.getLogger("yrmpi")
WATCH_S = 0.05  # how often the watcher looks for failed groups and ended instances


class _Entry:
    """One member's process group in one epoch of its group."""

    __slots__ = ("key", "comm", "epoch", "pg", "store", "inst", "name", "aborted", "wrappers")

    def __init__(self, key: tuple, comm: Any, epoch: Any, pg: Any, store: MPIStore, inst: Any, name: str) -> None:
        self.key, self.comm, self.epoch, self.pg, self.store, self.name = key, comm, epoch, pg, store, name
        self.inst = weakref.ref(inst)
        self.aborted = False
        self.wrappers: list = []  # weak references to the DDP wrappers made over it (yrmpi.torch.ddp)


_entries: dict[tuple, _Entry] = {}
_lock = threading.RLock()
_watcher: threading.Thread | None = None
_gpu_slots: dict[int, int] = {}  # iid -> the index of its GPU among those this rank sees


def _member() -> tuple[Any, Any, tuple]:
    return member_context(None, "yrmpi.torch")


def device() -> torch.device:
    """This instance's device: a GPU of its rank when the rank has one (at start-up every host
    rank of a GPU node was made to see only its share of the node's GPUs), else the CPU. With
    several GPUs on the rank, instances take distinct ones while there are enough. Sets torch's
    current CUDA device for the calling thread."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    try:
        _, inst, _ = _member()
        iid = inst.iid
    except Exception:  # the driver or a plain thread: the first GPU
        iid = None
    n = torch.cuda.device_count()
    with _lock:
        if iid is None:
            index = 0
        elif iid in _gpu_slots:
            index = _gpu_slots[iid]
        else:
            taken = set(_gpu_slots.values())
            index = next((i for i in range(n) if i not in taken), len(_gpu_slots) % n)
            _gpu_slots[iid] = index
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def _backend(dev: torch.device) -> str:
    return "cpu:gloo,cuda:nccl" if dev.type == "cuda" and dist.is_nccl_available() else "gloo"


def process_group(group: str | None = None, backend: str | None = None,
                  timeout: timedelta | None = None) -> Any:
    """The torch process group of this member's group (`group` as in yr.collective), in group
    rank order: pass it to DistributedDataParallel (`process_group=`) and to torch.distributed
    calls (`group=`). Collective: every member calls it; it returns the same object until the
    group changes (a member ends or is added), then forms a new one (the old one is destroyed).

    `backend`: default gloo on the CPU, gloo for CPU tensors and NCCL for CUDA tensors when the
    rank has a GPU. Use `pg.rank()` / `pg.size()` (torch's `dist.get_rank(pg)` needs a default
    group, which yrmpi does not create)."""
    coll, inst, gid = member_context(group, "yrmpi.torch.process_group")
    key = (gid, inst.iid)
    try:
        comm = collective.comm(group)
    except CollectiveError as exc:
        if "share ranks" not in str(exc):
            raise
        raise CollectiveError(
            f"yrmpi.torch.process_group(): {exc}. A torch process group has one process per member (gloo "
            f"and NCCL bind one device and one rank per process): give each worker a whole rank, e.g. "
            f"InvokeOptions(cpu=<cpu_per_rank>)") from None
    epoch = coll.members.get(key)
    with _lock:
        found = _entries.get(key)
        if found is not None and found.comm is comm and not found.aborted:
            return found.pg
    if found is not None:
        _destroy(found)
    timeout = timeout or c10d.default_pg_timeout
    store = MPIStore(comm, timeout=timeout)
    token = store.token
    dev = device()
    name = f"yrmpi:{token}"
    pg, _ = c10d._new_process_group_helper(
        comm.Get_size(), comm.Get_rank(), [], backend or _backend(dev), store, group_name=name, timeout=timeout,
        group_desc=f"yrmpi group {gid}")
    c10d._world.pg_group_ranks[pg] = {i: i for i in range(comm.Get_size())}  # (what destroy_process_group reads)
    entry = _Entry(key, comm, epoch, pg, store, inst, name)
    with _lock:
        _entries[key] = entry
        _watch()
    return pg


def track(pg: Any, model: Any) -> None:
    """Remember a DDP wrapper over `pg`, to release it with the group (see _abort)."""
    with _lock:
        for entry in _entries.values():
            if entry.pg is pg:
                entry.wrappers.append(weakref.ref(model))


def destroy(group: str | None = None) -> None:
    """Destroy this member's process group now (it is destroyed anyway when the instance ends
    or the group changes). Local: the other members are not waited for."""
    _, inst, gid = member_context(group, "yrmpi.torch.destroy")
    with _lock:
        found = _entries.get((gid, inst.iid))
    if found is not None:
        _destroy(found)


def _destroy(entry: _Entry) -> None:
    with _lock:
        if _entries.get(entry.key) is entry:
            del _entries[entry.key]
    try:
        if entry.pg in c10d._world.pg_map:
            dist.destroy_process_group(entry.pg)
        else:
            entry.pg.shutdown()
    except Exception as exc:  # an aborted group may refuse a clean shutdown
        log.debug("destroying torch process group %s: %r", entry.name, exc)
        _forget(entry.pg)
    entry.store.close()


def _forget(pg: Any) -> None:
    """Drop a group torch could not destroy from torch's bookkeeping (so names never collide)."""
    w = c10d._world
    for table in (w.pg_map, w.pg_names, w.pg_group_ranks, w.pg_backend_config, w.pg_to_tag, w.pg_coalesce_state):
        table.pop(pg, None)
    for pgs in w.tags_to_pg.values():
        while pg in pgs:
            pgs.remove(pg)


def _abort(entry: _Entry, why: str) -> None:
    """The yrmpi group failed or changed: release the process group at once. Gloo cannot
    interrupt an operation in progress (abort() leaves it blocked), but a process group whose
    last reference is dropped closes its connections, and a peer blocked in an operation with
    it then raises ("Connection closed by peer") instead of waiting out the timeout. So yrmpi
    drops its references (torch's bookkeeping, its own, and those of the DDP wrappers made by
    yrmpi.torch.ddp) on every member; the member whose call failed is not blocked, so its end
    of every connection closes."""
    entry.aborted = True
    log.debug("torch process group %s: %s; releasing it", entry.name, why)
    for ref in entry.wrappers:
        model = ref()
        if model is not None:
            _detach(model)
    entry.wrappers.clear()
    _destroy(entry)


def _detach(model: Any) -> None:
    """Drop what a DistributedDataParallel wrapper holds of its process group (it is unusable
    once the group failed; wrap the model again)."""
    for name in ("reducer", "logger", "_comm_hooks"):
        if name in model.__dict__:
            del model.__dict__[name]
    model.__dict__["process_group"] = None


def _watch() -> None:
    """Start the watcher (under _lock): it aborts the process groups of failed groups and
    destroys those of ended instances, so a rank reused by the next experiment starts clean."""
    global _watcher
    if _watcher is None or not _watcher.is_alive():
        _watcher = threading.Thread(target=_watch_loop, name="yrmpi-torch-watch", daemon=True)
        _watcher.start()


_stop = threading.Event()


def _watch_loop() -> None:
    global _watcher
    while not _stop.is_set():
        with _lock:
            entries = list(_entries.values())
            if not entries:
                _watcher = None
                return
        for entry in entries:
            inst = entry.inst()
            if inst is None or inst.ended is not None:
                _destroy(entry)
                with _lock:
                    _gpu_slots.pop(entry.key[1], None)
            elif not entry.aborted and entry.epoch is not None and entry.epoch.dead is not None:
                _abort(entry, f"the yrmpi group failed or changed ({entry.epoch.dead})")
        _stop.wait(WATCH_S)


@atexit.register
def _at_exit() -> None:
    """Destroy what is left in the main thread, before the interpreter stops: a daemon thread
    caught inside torch's C++ at exit would abort the process."""
    _stop.set()
    watcher = _watcher
    if watcher is not None:
        watcher.join(timeout=10.0)
    for entry in list(_entries.values()):
        _destroy(entry)
