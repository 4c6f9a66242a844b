"""The progress engine: who polls MPI, when, and which thread runs the work that arrives.

Rules, from measurements on oversubscribed nodes (see docs/architecture.md):
- Only one thread polls at a time (it holds `_role`). A user thread that waits for a result
  polls itself, so the result lands in the thread that needs it with no hand-off. Serve
  threads leave the wire to it while it waits and for `USER_POLLED_S` after (a loop of
  synchronous calls is back within microseconds; a serve thread polling in between would
  take its results and make it block on the role).
- Otherwise one serve thread, "the poller", polls. When it finds work (an instance call) it
  runs the work itself: no thread is woken on that path, because waking a thread on a busy
  node costs a scheduler time slice (milliseconds), far more than the call.
- A standby serve thread checks every `STANDBY_S`; if the poller has been running a job for
  longer than `HANDOVER_S`, the standby takes over polling, so one long call never stalls
  the other instances on the rank (leader/followers, with a lazy hand-off). On a rank with
  no call for `STANDBY_ACTIVE_S` it checks every `IDLE_STANDBY_S` only.
- Nobody spins while another thread runs user code or waits: spinning would hold the GIL and
  a core. Spinning lasts `SPIN_S` after the last message; then polling backs off
  exponentially up to `MAX_SLEEP_S`, sleeping on a condition that new work interrupts.
  A rank idle for `IDLE_AFTER_S` backs off further, to `IDLE_SLEEP_S`: every wake-up of an
  idle rank preempts a busy one on an oversubscribed node, so the first call to a long-idle
  rank pays up to `IDLE_SLEEP_S` to keep every other call fast.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from time import monotonic

from ..core.backoff import Backoff

SPIN_S = 0.002
MIN_SLEEP_S = 50e-6
MAX_SLEEP_S = 0.002
IDLE_AFTER_S = 0.1
USER_POLLED_S = 0.001  # a user thread that waited this recently will poll again: leave it the wire
IDLE_SLEEP_S = 0.02
STANDBY_S = 0.005
STANDBY_ACTIVE_S = 1.0  # a rank that started a call this recently keeps its standby alert
IDLE_STANDBY_S = 0.1
HANDOVER_S = 0.001
TICK_S = 0.001  # time-driven work (timeouts, deadlock probes, dropped handles) runs this often
DRAIN_S = 0.001  # a poll that got what it waited for still empties the wire if it has not for this long
PARKED_S = 0.5


class Progress:
    def __init__(
        self,
        receive: Callable[[], object],
        dispatch: Callable[[object], None],
        tick: Callable[[float], None] | None = None,
    ) -> None:
        self._receive = receive
        self._dispatch = dispatch
        self._tick = tick
        self._role = threading.Lock()
        self._cond = threading.Condition()
        self._ready: deque[Callable[[], None]] = deque()
        self._poller: int | None = None
        self._job_started = 0.0
        self._parked = 0
        self._servers: list[threading.Thread] = []
        # Thread idents, in sets (adding and discarding is atomic: no lock on the call path):
        self._users: set[int] = set()  # running user code: jobs, and the driver's main thread
        self._waiting: set[int] = set()  # user threads polling for themselves (Progress.wait)
        self._last_message = monotonic()
        self._last_user_wait = 0.0
        self._next_tick = 0.0
        self._drained_at = 0.0  # when a poll last found nothing left to receive
        self._local = threading.local()  # .event: the thread's wake-up event
        self.stopped = False

    def count_as_user(self) -> None:
        """The calling thread runs user code (the driver's main thread): count it."""
        self._users.add(threading.get_ident())

    # -- polling ---------------------------------------------------------------------------
    def poll(self, block_s: float = 0.0, until: Callable[[], bool] | None = None,
             spin: Callable[[float], bool] | None = None) -> int:
        """Receive and dispatch everything pending, if no other thread is polling.

        With `block_s`, wait that long for a polling thread to finish (without the GIL)
        rather than spinning against it: the poller needs the GIL to finish its poll.
        With `until`, return as soon as it is true (what the calling thread waits for).
        With `spin`, go on polling while nothing has arrived and `spin(now)` is true,
        keeping the role: a tight loop notices the next message sooner.
        """
        if not self._role.acquire(blocking=block_s > 0, timeout=block_s if block_s > 0 else -1):
            return 0
        receive = self._receive
        handled = 0
        try:
            while True:
                msg = receive()
                if msg is None:
                    now = self._drained_at = monotonic()
                    if now >= self._next_tick and self._tick is not None:
                        self._next_tick = now + TICK_S
                        self._tick(now)
                    if handled or spin is None or not spin(now):
                        break
                    continue
                handled += 1
                self._dispatch(msg)
                if self._ready and self._poller == threading.get_ident():
                    break  # the serve poller runs what it found at once; the next poll goes on
                if until is not None and until() and monotonic() - self._drained_at < DRAIN_S:
                    break  # (a message to this rank itself may have done it: still look at MPI once per DRAIN_S)
        finally:
            self._role.release()
        if handled:
            self._last_message = monotonic()
        return handled

    def _may_spin(self, now: float, others_waiting: int) -> bool:
        return not self._users and others_waiting == 0 and now - self._last_message < SPIN_S

    def wait(
        self, done: Callable[[], bool], arm: Callable[[Callable[[], None]], None] | None, deadline: float | None,
        check: Callable[[], None] | None = None,
    ) -> bool:
        """Poll from the calling user thread until `done()` or the deadline; True if done.

        While it spins nothing else is needed. Before its first sleep it calls `arm(wake)`:
        whoever completes what we wait for (another polling thread) then calls `wake()`, so
        backing off costs no latency. `check()` runs on every round and may raise to end
        the wait."""
        me = threading.get_ident()
        counted = me in self._users
        self._users.discard(me)
        self._waiting.add(me)

        def spinning(now: float) -> bool:
            if check is not None:
                check()
            return ((deadline is None or now < deadline) and self._may_spin(now, len(self._waiting) - 1)
                    and not done())

        try:
            backoff = event = None  # (made when first needed: most waits of a call loop end spinning)
            while not done():
                if check is not None:
                    check()
                if self.poll(MIN_SLEEP_S, done, spinning):
                    if backoff is not None:
                        backoff.reset()
                    continue
                now = monotonic()
                if deadline is not None and now >= deadline:
                    return done()
                if self._may_spin(now, len(self._waiting) - 1):
                    continue
                if event is None:
                    event = self._thread_event()
                    if arm is not None:
                        arm(event.set)
                    continue  # look again before sleeping: it may be done by now
                if backoff is None:
                    backoff = Backoff(MIN_SLEEP_S, MAX_SLEEP_S)
                sleep = backoff.next()
                event.wait(sleep if deadline is None else min(sleep, deadline - now))
                event.clear()
            return True
        finally:
            self._waiting.discard(me)
            self._last_user_wait = monotonic()
            if counted:
                self._users.add(me)

    def _thread_event(self) -> threading.Event:
        """This thread's wake-up event, cleared (a late wake from an earlier wait is harmless)."""
        event = getattr(self._local, "event", None)
        if event is None:
            event = self._local.event = threading.Event()
        event.clear()
        return event

    # -- serve threads ---------------------------------------------------------------------
    def start(self) -> None:
        with self._cond:
            self._spawn()

    def submit(self, job: Callable[[], None]) -> None:
        """Queue work for a serve thread. The polling serve thread runs what it found itself;
        work found by any other thread (a user thread waiting, a serve thread busy in a call)
        wakes a parked serve thread, or starts one."""
        if self._poller == threading.get_ident():
            self._ready.append(job)  # the poller takes it next (poll stops for it); nobody to wake
            return
        with self._cond:
            self._ready.append(job)
            if self._parked:
                self._cond.notify()
            else:
                self._spawn()

    def kick(self) -> None:
        """Wake a backing-off poller: there is local work to look at."""
        with self._cond:
            self._last_message = monotonic()
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self.stopped = True
            self._cond.notify_all()
        me = threading.current_thread()
        deadline = monotonic() + 1.0  # a thread stuck in a user call is a daemon: don't wait for it
        for thread in list(self._servers):
            if thread is not me:
                thread.join(timeout=max(0.0, deadline - monotonic()))

    def _spawn(self) -> None:
        """Start one more serve thread. Holds `_cond`."""
        thread = threading.Thread(target=self._serve, name=f"yrmpi-serve-{len(self._servers)}", daemon=True)
        self._servers.append(thread)
        thread.start()

    def _own_job(self, me: int) -> Callable[[], None] | None:
        """The call the poller just found, taken without the condition lock (the call path)."""
        if self._poller != me or not self._ready:
            return None
        job = self._pop_ready()
        if job is None:  # a parked thread took it
            return None
        self._users.add(me)
        self._job_started = monotonic()
        self._poller = None  # the standby polls instead if this job runs long
        if self._ready or not self._parked:
            with self._cond:
                self._find_helper()
        return job

    def _pop_ready(self) -> Callable[[], None] | None:
        """The next job, or None; one atomic step, since the poller pops without `_cond`."""
        try:
            return self._ready.popleft()
        except IndexError:
            return None

    def _find_helper(self) -> None:
        """A job was taken: wake a parked thread for the rest of the work, or as the standby
        that takes polling over; start one if none is parked. Holds `_cond`."""
        if self._ready or self._poller is None:
            if self._parked:
                if self._ready:
                    self._cond.notify()
            else:
                self._spawn()

    def _next_job(self, me: int) -> Callable[[], None] | None:
        """Take a job, or the poller role, or park. Holds `_cond`."""
        while not self.stopped:
            job = self._pop_ready()
            if job is not None:
                self._users.add(me)
                if self._poller == me:  # leave polling to the standby if this job runs long
                    self._job_started = monotonic()
                    self._poller = None
                self._find_helper()
                return job
            if self._poller == me:
                return None
            if self._poller is None and (not self._users or monotonic() - self._job_started >= HANDOVER_S):
                self._poller = me
                return None
            # The first parked thread is the standby: it checks often while calls run on this
            # rank (recently), rarely on an idle rank, where its wake-ups would only cost CPU.
            active = monotonic() - self._job_started < STANDBY_ACTIVE_S
            standby = self._parked == 0
            self._parked += 1
            self._cond.wait((STANDBY_S if active else IDLE_STANDBY_S) if standby else PARKED_S)
            self._parked -= 1
        return None

    def _spin(self, me: int) -> bool:
        """As the serve poller: poll, and go on polling while spinning is allowed. True if it
        found messages or the rank's state changed (look for work); False: time to back off."""
        changed = False

        def spinning(now: float) -> bool:
            nonlocal changed
            changed = bool(self._waiting or self._ready or self.stopped or self._poller != me)
            return not changed and self._may_spin(now, 0)

        return self.poll(spin=spinning) > 0 or changed

    def _serve(self) -> None:
        me = threading.get_ident()
        backoff = None  # made when the thread first backs off after work (not once per call)
        while True:
            job = self._own_job(me)
            if job is None:
                with self._cond:
                    job = self._next_job(me)
                    if self.stopped:
                        return
            if job is not None:
                try:
                    job()
                finally:
                    self._users.discard(me)
                    with self._cond:
                        if self._poller is None:
                            self._poller = me  # take polling back: no wake-up on the fast path
                backoff = None
                continue
            now = monotonic()
            user_polls = bool(self._waiting) or now - self._last_user_wait < USER_POLLED_S
            if not user_polls and self._spin(me):
                backoff = None
                continue
            idle = user_polls or now - self._last_message > IDLE_AFTER_S
            if backoff is None:
                backoff = Backoff(MIN_SLEEP_S, MAX_SLEEP_S)
            sleep = backoff.next(IDLE_SLEEP_S if idle else MAX_SLEEP_S)
            with self._cond:
                if not self._ready and not self.stopped and self._poller == me:
                    self._cond.wait(sleep)
