"""The progress engine: who polls MPI, when, and which thread runs the work that arrives.

Rules, from measurements on oversubscribed nodes (see docs/architecture.md):
- Only one thread polls at a time (it holds `_role`). A user thread that waits for a result
  polls itself, so the result lands in the thread that needs it with no hand-off.
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

SPIN_S = 0.002
MIN_SLEEP_S = 50e-6
MAX_SLEEP_S = 0.002
IDLE_AFTER_S = 0.1
IDLE_SLEEP_S = 0.02
STANDBY_S = 0.005
STANDBY_ACTIVE_S = 1.0  # a rank that started a call this recently keeps its standby alert
IDLE_STANDBY_S = 0.1
HANDOVER_S = 0.001
PARKED_S = 0.5


class Progress:
    def __init__(
        self,
        receive: Callable[[], object],
        dispatch: Callable[[object], None],
        tick: Callable[[float], None] | None = None,
        check_interrupt: Callable[[], None] | None = None,
    ) -> None:
        self._receive = receive
        self._dispatch = dispatch
        self._tick = tick
        self._check_interrupt = check_interrupt or (lambda: None)
        self._role = threading.Lock()
        self._cond = threading.Condition()
        self._ready: deque[Callable[[], None]] = deque()
        self._poller: int | None = None
        self._job_started = 0.0
        self._parked = 0
        self._servers: list[threading.Thread] = []
        self._in_user = 0  # threads running user code: jobs, and the driver's main thread
        self._waiters = 0
        self._last_message = monotonic()
        self._local = threading.local()  # .user: this thread is counted in _in_user
        self.stopped = False

    def count_as_user(self) -> None:
        """The calling thread runs user code (the driver's main thread): count it."""
        self._local.user = True
        with self._cond:
            self._in_user += 1

    # -- polling ---------------------------------------------------------------------------
    def poll(self, block_s: float = 0.0) -> int:
        """Receive and dispatch everything pending, if no other thread is polling.

        With `block_s`, wait that long for a polling thread to finish (without the GIL)
        rather than spinning against it: the poller needs the GIL to finish its poll.
        """
        if not self._role.acquire(blocking=block_s > 0, timeout=block_s if block_s > 0 else -1):
            return 0
        try:
            handled = 0
            while True:
                msg = self._receive()
                if msg is None:
                    break
                handled += 1
                self._dispatch(msg)
            if self._tick is not None:
                self._tick(monotonic())
        finally:
            self._role.release()
        if handled:
            self._last_message = monotonic()
        return handled

    def _may_spin(self, now: float, others_waiting: int) -> bool:
        return self._in_user == 0 and others_waiting == 0 and now - self._last_message < SPIN_S

    def wait(self, done: Callable[[], bool], event: threading.Event, deadline: float | None) -> bool:
        """Poll from the calling user thread until `done()` or the deadline; True if done.

        `event` is set by whoever completes what we wait for, so backing off costs no latency.
        """
        counted = getattr(self._local, "user", False)
        with self._cond:
            self._in_user -= counted
            self._waiters += 1
        try:
            sleep = MIN_SLEEP_S
            while not done():
                self._check_interrupt()
                if self.poll(block_s=MIN_SLEEP_S):
                    sleep = MIN_SLEEP_S
                    continue
                now = monotonic()
                if deadline is not None and now >= deadline:
                    return done()
                if self._may_spin(now, self._waiters - 1):
                    continue
                timeout = sleep if deadline is None else min(sleep, deadline - now)
                event.wait(timeout)
                event.clear()
                sleep = min(sleep * 2, MAX_SLEEP_S)
            return True
        finally:
            with self._cond:
                self._in_user += counted
                self._waiters -= 1

    # -- serve threads ---------------------------------------------------------------------
    def start(self) -> None:
        with self._cond:
            self._spawn()

    def submit(self, job: Callable[[], None]) -> None:
        """Queue work for a serve thread. The polling serve thread runs what it found itself;
        work found by any other thread (a user thread waiting, a serve thread busy in a call)
        wakes a parked serve thread, or starts one."""
        with self._cond:
            self._ready.append(job)
            if self._poller != threading.get_ident():
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

    def _next_job(self, me: int) -> Callable[[], None] | None:
        """Take a job, or the poller role, or park. Holds `_cond`."""
        while not self.stopped:
            if self._ready:
                job = self._ready.popleft()
                if self._poller == me:  # leave polling to the standby if this job runs long
                    self._poller = None
                    self._job_started = monotonic()
                if self._ready:  # more work than this thread: another thread takes it now
                    if self._parked:
                        self._cond.notify()
                    else:
                        self._spawn()
                elif not self._parked and self._poller is None:
                    self._spawn()  # the standby that takes over polling if this job runs long
                self._in_user += 1
                return job
            if self._poller == me:
                return None
            if self._poller is None and (self._in_user == 0 or monotonic() - self._job_started >= HANDOVER_S):
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

    def _serve(self) -> None:
        me = threading.get_ident()
        sleep = MIN_SLEEP_S
        while True:
            with self._cond:
                job = self._next_job(me)
                if self.stopped:
                    return
            if job is not None:
                self._local.user = True
                try:
                    job()
                finally:
                    self._local.user = False
                    with self._cond:
                        self._in_user -= 1
                        if self._poller is None:
                            self._poller = me  # take polling back: no wake-up on the fast path
                sleep = MIN_SLEEP_S
                continue
            if self._waiters == 0:  # a waiting user thread polls for itself: stay out of its way
                if self.poll():
                    sleep = MIN_SLEEP_S
                    continue
                if self._may_spin(monotonic(), 0):
                    continue
            now = monotonic()
            idle = self._waiters > 0 or now - self._last_message > IDLE_AFTER_S
            with self._cond:
                if not self._ready and not self.stopped and self._poller == me:
                    self._cond.wait(sleep)
            sleep = min(sleep * 2, IDLE_SLEEP_S if idle else MAX_SLEEP_S)
