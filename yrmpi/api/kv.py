"""The yr KV API (`kv_write`, `kv_read`, `kv_del`, `kv_set`, `kv_get`, the `*_with_param` forms)
and `save_state`/`load_state`, on the job's key-value store in rank 0's memory
(`scheduling/kv.py`).

Keys are strings, values bytes (`bytes`, `bytearray`, `memoryview`; a `str` is stored as its
UTF-8 bytes). Values of 64 KB and more travel out of band, as raw MPI messages. The store is
job-wide (the driver and every instance see the same keys) and lasts until the job ends: it
survives the instances and host ranks that wrote to it, not `yr.finalize`. `write_mode` and
`cache_type` are accepted and ignored (there is one medium: rank 0's memory); `ttl_second` and
`existence` are honoured.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import cloudpickle

from .. import runtime as _rt
from ..core.errors import YRRuntimeError, YRTimeoutError, YRTypeError, YRValueError
from ..core.messages import KvDel, KvRead, KvWrite

__all__ = [
    "CacheType", "ConsistencyType", "CreateParam", "ExistenceOpt", "GetParam", "GetParams", "MSetParam", "SetParam",
    "WriteMode", "kv_del", "kv_get", "kv_get_with_param", "kv_m_write_tx", "kv_read", "kv_set", "kv_write",
    "kv_write_with_param", "load_state", "save_state",
]

OOB_MIN_BYTES = 64 * 1024  # as transport.pickling: larger values leave the pickle as raw buffers
REPLY_MARGIN_S = 5.0  # the store answers a read at its timeout; the reader waits this much longer


class ExistenceOpt(Enum):
    """Whether a write may replace an existing key."""

    NONE = 0  # it may
    NX = 1  # only if the key does not exist


class WriteMode(Enum):
    """The SDK's second-level-cache reliability; one medium here (accepted, ignored)."""

    NONE_L2_CACHE = 0
    WRITE_THROUGH_L2_CACHE = 1
    WRITE_BACK_L2_CACHE = 2
    NONE_L2_CACHE_EVICT = 3


class CacheType(Enum):
    """Memory or disk in the SDK; rank 0's memory here (accepted, ignored)."""

    MEMORY = 0
    DISK = 1


class ConsistencyType(Enum):
    PRAM = 0
    CAUSAL = 1


@dataclass
class SetParam:
    existence: ExistenceOpt = ExistenceOpt.NONE
    write_mode: WriteMode = WriteMode.NONE_L2_CACHE
    ttl_second: int = 0  # 0: until deleted
    cache_type: CacheType = CacheType.MEMORY


@dataclass
class MSetParam:
    existence: ExistenceOpt = ExistenceOpt.NX
    write_mode: WriteMode = WriteMode.NONE_L2_CACHE
    ttl_second: int = 0
    cache_type: CacheType = CacheType.MEMORY


@dataclass
class CreateParam:
    """`yr.put`'s parameters in the SDK (accepted, ignored)."""

    write_mode: WriteMode = WriteMode.NONE_L2_CACHE
    consistency_type: ConsistencyType = ConsistencyType.PRAM
    cache_type: CacheType = CacheType.MEMORY


@dataclass
class GetParam:
    offset: int = 0
    size: int = 0  # 0: to the end


@dataclass
class GetParams:
    get_params: list[GetParam] = field(default_factory=list)


# -- the wire form of values ----------------------------------------------------------------------
def _to_wire(key: Any, value: Any) -> Any:
    if not isinstance(key, str) or not key:
        raise YRTypeError(f"a KV key must be a non-empty str, got {key!r}")
    if isinstance(value, str):
        value = value.encode()
    elif isinstance(value, (bytearray, memoryview)):
        value = bytes(value)
    elif not isinstance(value, bytes):
        raise YRTypeError(f"a KV value must be bytes (or bytearray, memoryview, str), got {type(value).__name__}")
    if len(value) >= OOB_MIN_BYTES:
        import numpy as np

        return np.frombuffer(value, dtype=np.uint8)  # out of band: no copy into the pickle
    return value


def _from_wire(value: Any) -> Any:
    if value is None or isinstance(value, bytes):
        return value
    return value.tobytes()


def _keys(key: Any, what: str) -> tuple[list[str], bool]:
    single = isinstance(key, str)
    keys = [key] if single else key
    if not isinstance(keys, (list, tuple)) or not all(isinstance(k, str) and k for k in keys):
        raise YRTypeError(f"{what} takes a key (str) or a list of keys, got {key!r}")
    return list(keys), single


def _ask(msg_type: type, *fields: Any, timeout: float | None = 60) -> Any:
    rt = _rt.current()
    key = rt.new_id()
    reply = rt.request(msg_type(key, rt.rank, *fields), key=key, timeout=timeout)
    if reply is _rt.TIMED_OUT:
        raise YRTimeoutError(f"the KV store (rank 0) did not answer in {timeout} s")
    return reply


def _check_timeout(timeout: Any) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise YRTypeError(f"timeout must be a number of seconds, got {timeout!r}")
    if timeout < 0 and timeout != -1:
        raise YRValueError("Parameter 'timeout' should be greater than or equal to -1 (no timeout)")
    return timeout


def _write(keys: list[str], values: list[Any], existence: Any, ttl: Any) -> None:
    if not isinstance(existence, ExistenceOpt):
        raise YRTypeError(f"existence must be a yr.ExistenceOpt, got {existence!r}")
    if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 0:
        raise YRValueError(f"ttl_second must be an int >= 0, got {ttl!r}")
    wire = [_to_wire(k, v) for k, v in zip(keys, values)]
    problem = _ask(KvWrite, keys, wire, existence is ExistenceOpt.NX, float(ttl))
    if problem is not None:
        raise YRRuntimeError(f"kv write failed: {problem}")


def _read(keys: list[str], timeout: float, partial: bool = False) -> list[Any]:
    timeout = _check_timeout(timeout)
    wait = None if timeout == -1 else timeout + REPLY_MARGIN_S
    reply = _ask(KvRead, keys, float(timeout), partial, timeout=wait)
    if isinstance(reply, str):
        raise YRTimeoutError(f"kv read failed after {timeout} s: {reply}")
    return [_from_wire(v) for v in reply]


# -- the SDK's functions ------------------------------------------------------------------------
def kv_write(key: str, value: bytes, existence: ExistenceOpt = ExistenceOpt.NONE,
             write_mode: WriteMode = WriteMode.NONE_L2_CACHE, ttl_second: int = 0,
             cache_type: CacheType = CacheType.MEMORY) -> None:
    """Store `value` under `key`, job-wide. `ExistenceOpt.NX` refuses to replace a key
    (RuntimeError); `ttl_second > 0` lets it expire."""
    _rt.current()
    _write([key], [value], existence, ttl_second)


def kv_write_with_param(key: str, value: bytes, set_param: SetParam) -> None:
    if not isinstance(set_param, SetParam):
        raise YRTypeError(f"set_param must be a yr.SetParam, got {type(set_param).__name__}")
    _rt.current()
    _write([key], [value], set_param.existence, set_param.ttl_second)


def kv_set(key: str, value: bytes, set_param: SetParam | None = None) -> None:
    kv_write_with_param(key, value, set_param or SetParam())


def kv_m_write_tx(keys: list[str], values: list[bytes], m_set_param: MSetParam | None = None) -> None:
    """Write several keys at once, all or none: the SDK allows it only with ExistenceOpt.NX."""
    param = m_set_param or MSetParam()
    if len(keys) != len(values):
        raise YRValueError(f"arguments list size not equal. keys size is: {len(keys)}, "
                           f"values size is: {len(values)}.")
    if param.existence is not ExistenceOpt.NX:
        raise YRValueError("invalid param: existence should be NX.")
    _rt.current()
    _write(list(keys), list(values), param.existence, param.ttl_second)


def kv_read(key: str | list[str], timeout: float = 300) -> Any:
    """The value of a key (bytes), or a list of values; waits up to `timeout` seconds (-1:
    forever) for keys not written yet, then raises (a TimeoutError that is a RuntimeError)."""
    keys, single = _keys(key, "yr.kv_read")
    _rt.current()
    values = _read(keys, timeout)
    return values[0] if single else values


def kv_get(key: str | list[str], timeout: float = 300) -> Any:
    if not isinstance(timeout, bool) and isinstance(timeout, (int, float)) and timeout <= 0 and timeout != -1:
        raise YRValueError("Parameter 'timeout' should be greater than 0 or equal to -1 (no timeout)")
    return kv_read(key, timeout)


def kv_get_with_param(keys: list[str], get_params: GetParams, timeout: float = 300) -> list[bytes]:
    """Slices of values: `get_params.get_params[i]` (offset, size; size 0 to the end) for `keys[i]`."""
    keys, _ = _keys(keys, "yr.kv_get_with_param")
    if not isinstance(get_params, GetParams):
        raise YRTypeError(f"get_params must be a yr.GetParams, got {type(get_params).__name__}")
    if not get_params.get_params:
        raise YRValueError("Get params does not accept empty list")
    if len(get_params.get_params) != len(keys):
        raise YRValueError("Get params size is not equal to keys size")
    _rt.current()
    values = _read(keys, timeout)
    out = []
    for value, param in zip(values, get_params.get_params):
        if param.offset < 0 or param.size < 0 or param.offset > len(value):
            raise YRValueError(f"GetParam(offset={param.offset}, size={param.size}) is outside a value of "
                               f"{len(value)} bytes")
        end = len(value) if param.size == 0 else param.offset + param.size
        out.append(value[param.offset:end])
    return out


def kv_del(key: str | list[str]) -> None:
    """Delete a key or a list of keys (missing keys are ignored)."""
    keys, _ = _keys(key, "yr.kv_del")
    _rt.current()
    _ask(KvDel, keys)


# -- save_state / load_state ----------------------------------------------------------------------
def _state_key(rt: Any, what: str) -> tuple[Any, str]:
    inst = rt.current_instance()
    obj = getattr(inst, "obj", None) if inst is not None else None
    if obj is None:
        raise YRRuntimeError(f"{what} is only supported inside an instance method")
    return obj, f"\x00yrmpi-state/{rt.settings['job_id']}/{inst.iid:x}"


def save_state(timeout_sec: int = 30) -> None:
    """Inside a method: save the instance's attributes (its `__dict__`) in the job's KV store.
    They survive the instance's restart (`recover_retry_times`): `load_state()` brings them back."""
    rt = _rt.current()
    obj, key = _state_key(rt, "save_state")
    try:
        blob = cloudpickle.dumps(vars(obj), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise YRRuntimeError(f"Failed to save state: the attributes of {type(obj).__qualname__} cannot be "
                             f"pickled: {exc}") from exc
    _write([key], [blob], ExistenceOpt.NONE, 0)


def load_state(timeout_sec: int = 30) -> None:
    """Inside a method: restore the attributes saved by the last `save_state()` of this instance."""
    rt = _rt.current()
    obj, key = _state_key(rt, "load_state")
    try:
        blob = _read([key], timeout_sec)[0]
    except YRTimeoutError as exc:
        raise YRRuntimeError(f"Failed to load state: no state saved for this instance ({exc})") from None
    state = cloudpickle.loads(blob)
    vars(obj).clear()
    vars(obj).update(state)
