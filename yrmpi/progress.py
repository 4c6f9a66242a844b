"""The progress engine: who polls MPI, when, and which thread runs the work that arrives.

Rules, from measurements on oversubscribed nodes (see docs/architecture.md):
- Only one thread polls at a time (it holds `_role`). A user thread that waits for a result
  polls itself, so the result lands in the thread that needs it with no hand-off.
- Otherwise one serve thread, "the poller", polls. When it finds work (an instance call), it
  runs that work itself and hands polling to a parked serve thread (leader/followers), so a
  call costs no thread hand-off either. After the work it takes polling back.
- Nobody spins while another thread runs user code or waits: spinning would hold the GIL and
  the core. Spinning lasts `SPIN_S` after the last message, then polling backs off
  exponentially up to `MAX_SLEEP_S`, sleeping on a condition that new work interrupts.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from time import monotonic

SPIN_S = 0.002
MIN_SLEEP_S = 50e-6
MAX_SLEEP_S = 0.002


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
        self._parked = 0
        self._servers: list[threading.Thread] = []
        self._in_user = 0  # threads running user code: jobs, and the driver's main thread
        self._waiters = 0
        self._last_message = monotonic()
        self._counted = threading.local()  # .on: this thread is one of the `_in_user` ones
        self.stopped = False

    def count_as_user(self) -> None:
        """The calling thread runs user code (the driver's main thread): count it."""
        self._counted.on = True
        with self._cond:
            self._in_user += 1

    # -- polling ---------------------------------------------------------------------------
    def poll(self) -> int:
        """Receive and dispatch everything pending, if no other thread is polling."""
        if not self._role.acquire(blocking=False):
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
        counted = getattr(self._counted, "on", False)
        with self._cond:
            self._in_user -= counted
            self._waiters += 1
        try:
            sleep = MIN_SLEEP_S
            while not done():
                if self.poll():
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
        self._spawn()

    def submit(self, job: Callable[[], None]) -> None:
        """Queue work for a serve thread (the poller runs it inline when it found it)."""
        with self._cond:
            self._ready.append(job)
            self._cond.notify_all()

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
        for thread in list(self._servers):
            if thread is not me:
                thread.join(timeout=5)

    def _spawn(self) -> None:
        thread = threading.Thread(target=self._serve, name=f"yrmpi-serve-{len(self._servers)}", daemon=True)
        self._servers.append(thread)
        thread.start()

    def _next_job(self, me: int) -> Callable[[], None] | None:
        """Take a job or the poller role; park while another thread polls. Holds `_cond`."""
        while not self.stopped:
            if self._ready:
                job = self._ready.popleft()
                if self._poller == me:
                    self._poller = None
                    if self._parked:
                        self._cond.notify()
                    else:
                        self._spawn()
                self._in_user += 1
                return job
            if self._poller in (None, me):
                self._poller = me
                return None
            self._parked += 1
            self._cond.wait(0.5)
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
                self._counted.on = True
                try:
                    job()
                finally:
                    self._counted.on = False
                    with self._cond:
                        self._in_user -= 1
                        self._poller = me  # take polling back at once: no wake-up on the path
                        self._cond.notify_all()
                sleep = MIN_SLEEP_S
                continue
            if self.poll():
                sleep = MIN_SLEEP_S
                continue
            if self._may_spin(monotonic(), self._waiters):
                continue
            with self._cond:
                if not self._ready and not self.stopped and self._poller == me:
                    self._cond.wait(sleep)
            sleep = min(sleep * 2, MAX_SLEEP_S)
