"""What one rank knows of its groups: each carving (epoch) of a group, the rounds in which the
members sharing this rank combine, and the joins waiting for the next epoch."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.groups import group_label

HISTORY = 64  # call signatures kept per member for mismatch diagnosis


@dataclass
class Round:
    """One collective call of the members that share this rank: they combine here first."""

    n: int
    items: dict[int, tuple] = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)
    results: list | None = None
    error: BaseException | None = None


class Failed:
    """A per-member failure among a round's results (the others still get theirs)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class Epoch:
    """One carving of a group, as seen from one rank: its members, communicators and counts."""

    def __init__(self, gid: tuple, epoch: int, version: int, tag: int, view: Sequence[tuple[int, int]],
                 my_rank: int) -> None:
        self.gid, self.epoch, self.version, self.tag = gid, epoch, version, tag
        self.members = [iid for iid, _ in view]
        self.index = {iid: i for i, iid in enumerate(self.members)}
        self.member_rank = [r for _, r in view]
        self.ranks = list(dict.fromkeys(self.member_rank))  # comm rank order: first appearance
        self.counts = [self.member_rank.count(r) for r in self.ranks]
        self.local = [iid for iid, r in view if r == my_rank]
        self.local_index = {iid: i for i, iid in enumerate(self.local)}
        order = [g for r in self.ranks for g, mr in enumerate(self.member_rank) if mr == r]
        self.gather_index = np.argsort(order)  # rank-major position -> group order
        self.identity_order = order == sorted(order)
        self.simple = all(c == 1 for c in self.counts)  # one member per rank: comm rank == group rank
        self.size = len(self.members)
        self.nranks = len(self.ranks)
        self.comm: Any = None  # carved: validation and per-signature Idup happen here
        self.ctl: Any = None  # control: the one switch-over allreduce of this epoch
        self.ready = threading.Event()
        self.generation = 0  # which shrink of the carving communicator it is carved from
        self.failure: BaseException | None = None
        self.dead: BaseException | None = None
        self.lock = threading.Lock()
        self.comms: dict[Hashable, Any] = {}
        self.rounds: dict[int, Round] = {}
        self.started = {iid: 0 for iid in self.local}
        self.history = {iid: deque(maxlen=HISTORY) for iid in self.local}
        self.switch_wanted = False
        self.switch_req: Any = None
        self.switch_buf: tuple | None = None
        self.switch_at: int | None = None
        self.inside: set[int] = set()  # local members inside a collective call right now
        self.retired: set[int] = set()  # local members that left this epoch for good
        self.freed = False
        self.abandoned: list = []  # buffers of requests that never completed: keep them alive
        self.persistent: list = []  # inactive persistent requests on this epoch's communicators

    @property
    def name(self) -> str:
        return group_label(self.gid)


def carved_or_dead(ec: Epoch) -> bool:
    return ec.ready.is_set() or ec.dead is not None


@dataclass
class Join:
    """A local member waiting for the registry to hand out the epoch it asked to join."""

    event: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class RankGroup:
    """What this rank knows of one group: its latest epoch and the membership version."""

    def __init__(self) -> None:
        self.latest: Epoch | None = None
        self.version = 0
        self.live: set[Epoch] = set()
        self.joins: dict[int, Join] = {}
        self.query: dict[int, tuple[int, int, int]] = {}  # iid -> (version, rank, size)
        # The last fail-fast tear-down: (its error, the calls running on this rank when it came).
        # A member whose call was one of them fails when it enters a collective (`Collectives.enter`).
        self.failed: tuple[BaseException, set] | None = None
