"""Pickling for the wire: protocol 5, large buffers out of band, classes of the driver script
by value.

The standard pickler is used when its output would load on any rank (fast: ~0.5 us for a call
tuple); cloudpickle otherwise, since other ranks never ran the driver script.
"""

from __future__ import annotations

import pickle
import threading
from collections.abc import Callable
from typing import Any

import cloudpickle

OOB_MIN_BYTES = 64 * 1024  # smaller buffers stay inside the pickle: one message is cheaper

# The modules registered with cloudpickle.register_pickle_by_value. The public accessor
# (list_registry_pickle_by_value) copies the set on every call, and this is read for every
# message sent, so the registry itself is read here.
_BY_VALUE = cloudpickle.cloudpickle._PICKLE_BY_VALUE_MODULES


def _needs_cloudpickle(data: bytes) -> bool:
    """A plain pickle that names __main__ (or a module registered to travel by value) would
    not load on another rank, which never ran the driver script."""
    if data.find(b"__main__") >= 0:  # (`find` is cheaper than `in` for short bytes)
        return True
    return bool(_BY_VALUE) and any(data.find(name.encode()) >= 0 for name in _BY_VALUE)


_session = threading.local()


def after_pickle(action: Callable[[], None]) -> None:
    """Run `action` once the message being pickled is final (a first attempt may be redone
    with cloudpickle, which calls the reducers again); at once outside `dumps`."""
    pending = getattr(_session, "actions", None)
    if pending is None:
        action()
    else:
        pending.append(action)


class Buffers(list):
    """Collects the large buffers a pickle leaves out of band (its `buffer_callback`)."""

    def __call__(self, pb: pickle.PickleBuffer) -> bool:
        if pb.raw().nbytes >= OOB_MIN_BYTES:
            self.append(pb)
            return False
        return True


def dumps(obj: Any, buffers: Buffers | None = None) -> bytes:
    """Pickle with protocol 5: the standard pickler when its output loads anywhere (fast),
    else cloudpickle, which sends classes and functions of the driver script by value.
    With `buffers`, large buffers (numpy arrays) are left out of band and appended there.
    Side effects that reducers defer with `after_pickle` run once, on success."""
    outer = getattr(_session, "actions", None)
    _session.actions = actions = []
    try:
        try:
            data = pickle.dumps(obj, protocol=5, buffer_callback=buffers)
        except Exception:
            data = None
        if data is None or _needs_cloudpickle(data):
            if buffers:
                buffers.clear()
            _session.actions = actions = []  # the reducers run again
            data = cloudpickle.dumps(obj, protocol=5, buffer_callback=buffers)
    finally:
        _session.actions = outer
    for action in actions:
        after_pickle(action)
    return data


def loads(data: Any, buffers: list | None = None) -> Any:
    return pickle.loads(data, buffers=buffers)
