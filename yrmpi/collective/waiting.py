"""How a member waits in a collective without holding a core, and stays interruptible.

Nonblocking collectives advance only inside Test (libnbc, MPICH), so a wait first spins on Test
for about as long as the transfer should take: SPIN_S, or twice the time its size suggests, at
most SPIN_MAX_S (sched_yield between tests measured slower, even with more ranks than cores).
Then it sleeps FAST_SLEEP_S between tests while the transfer may still be in flight, then backs
off to SLEEP_MAX_S: a member waiting for a peer that is still computing must not hold a core.
Meanwhile it polls the rank's wire itself (the serve threads may all be busy in collectives, and
tear-down messages must still arrive), and it notices a torn-down epoch or an ended instance.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from ..core.backoff import Backoff
from ..core.messages import CollStall
from ..core.rank import InstanceContext, Rank
from ..transport.interrupt import InstanceTornDown
from .epoch import Epoch
from .errors import fresh

SPIN_TESTS = 64  # a first burst of Tests without reading the clock (small messages finish here)
SPIN_S = 300e-6
SPIN_MAX_S = 0.005
SPIN_YIELD = False
BANDWIDTH = 1.5e9  # bytes/s, for the expected duration of a transfer (a rough, low figure)
FAST_SLEEP_S = 50e-6
FAST_S = 0.01
SLEEP_MAX_S = 0.002
WIRE_S = 0.002  # how often a waiting member polls the rank's wire itself
STALL_S = 0.25  # a collective waiting this long asks the registry to compare call signatures
STALL_MAX_S = 4.0


def wait_until(rank: Rank, done: Callable[[], bool], inst: InstanceContext | None, ec: Epoch | None = None,
               event: threading.Event | None = None, est_s: float = 0.0, stall: Epoch | None = None,
               spin: bool = True) -> None:
    """Wait until done(); raise if the epoch `ec` is torn down (its error) or this instance ends
    meanwhile (InstanceTornDown, as any wait of an ended instance's call). With `stall`, a long
    wait asks the registry to compare that epoch's call signatures. `event`, if given, is set
    when done() may have become true: the wait sleeps on it instead of spinning."""
    if done():
        return
    now = time.monotonic()
    if spin and event is None:
        end = now + min(max(SPIN_S, 2 * est_s), SPIN_MAX_S)
        while time.monotonic() < end:
            for _ in range(8):
                if done():
                    return
            if SPIN_YIELD:
                os.sched_yield()
    backoff = Backoff(FAST_SLEEP_S, SLEEP_MAX_S)
    most = FAST_SLEEP_S  # no doubling while the transfer may still be in flight
    fast_until = now + FAST_S + 4 * est_s
    next_wire = now + WIRE_S
    stall_every = max(STALL_S, 4 * est_s)
    next_stall = now + stall_every if stall is not None else float("inf")
    while True:
        if ec is not None and ec.dead is not None:
            raise fresh(ec.dead)
        if inst is not None and inst.ended is not None:
            raise InstanceTornDown()  # the call of an ended instance ends like any other
        sleep = backoff.next(most)
        if event is not None:
            event.wait(sleep)
        else:
            time.sleep(sleep)
        if done():
            return
        now = time.monotonic()
        if now >= fast_until:
            most = SLEEP_MAX_S
        if now >= next_wire:
            rank.poll()  # work found here goes to a serve thread
            next_wire = now + WIRE_S
        if now >= next_stall:
            rank.send(0, CollStall(stall.gid, stall.epoch))
            stall_every = min(stall_every * 2, STALL_MAX_S)
            next_stall = now + stall_every


def wait_request(rank: Rank, req: Any, ec: Epoch, inst: InstanceContext | None, nbytes: int,
                 keep: tuple) -> None:
    """Wait for a nonblocking MPI request on `ec`'s communicators; if the wait is interrupted,
    keep the request and its buffers alive for good (MPI may still touch them)."""
    test = req.Test
    for _ in range(SPIN_TESTS):
        if test():
            return
    try:
        wait_until(rank, test, inst, ec, est_s=nbytes / BANDWIDTH, stall=ec)
    except BaseException:
        ec.abandoned.append((req, keep))
        raise
