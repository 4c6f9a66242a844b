"""The rest of the SDK's `yr` namespace: names that import, so yr programs start, and then either
do nothing (metrics: accepted and ignored, with one warning) or say at once that they are out of
scope (cluster services: streams, FaaS functions, other languages). See docs/api.md, "yr API ->
yrmpi"."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from ..core.errors import YRRuntimeError
from ..core.log import log

__all__ = [
    "Alarm", "AlarmInfo", "AlarmSeverity", "Context", "DeviceInfo", "DoubleCounter", "Element", "Function", "Gauge",
    "ProducerConfig", "SchedulingAffinityType", "ServerInfo", "SubscriptionConfig", "UInt64Counter", "UserTLSConfig",
    "cpp_function", "cpp_instance_class", "create_stream_consumer", "create_stream_producer", "delete_stream",
    "go_function", "go_instance_class", "java_function", "java_instance_class",
    "query_global_consumers_num", "query_global_producers_num",
]

_warned: set[str] = set()


def _out_of_scope(name: str, why: str) -> YRRuntimeError:
    return YRRuntimeError(f"yr.{name} is out of scope in yrmpi: {why}")


def _stub(name: str, why: str) -> Any:
    def call(*_args: Any, **_kwargs: Any) -> Any:
        raise _out_of_scope(name, why)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"Out of scope in yrmpi: {why}."
    return call


def _stub_class(name: str, why: str) -> type:
    def init(self: Any, *_args: Any, **_kwargs: Any) -> None:
        raise _out_of_scope(name, why)

    return type(name, (), {"__init__": init, "__doc__": f"Out of scope in yrmpi: {why}."})


_STREAMS = "streams are a service of openYuanrong's data system; pass refs or use yr.kv_* and yr.collective"
_FAAS = "FaaS and HTTP functions are cluster services; use @yr.invoke functions"
_LANG = "C++, Java and Go functions need openYuanrong's runtimes; yrmpi runs Python on MPI ranks"

create_stream_producer = _stub("create_stream_producer", _STREAMS)
create_stream_consumer = _stub("create_stream_consumer", _STREAMS)
delete_stream = _stub("delete_stream", _STREAMS)
query_global_producers_num = _stub("query_global_producers_num", _STREAMS)
query_global_consumers_num = _stub("query_global_consumers_num", _STREAMS)
ProducerConfig = _stub_class("ProducerConfig", _STREAMS)
SubscriptionConfig = _stub_class("SubscriptionConfig", _STREAMS)
Element = _stub_class("Element", _STREAMS)
Function = _stub_class("Function", _FAAS)
Context = _stub_class("Context", _FAAS)
cpp_function = _stub("cpp_function", _LANG)
java_function = _stub("java_function", _LANG)
go_function = _stub("go_function", _LANG)
cpp_instance_class = _stub("cpp_instance_class", _LANG)
java_instance_class = _stub("java_instance_class", _LANG)
go_instance_class = _stub("go_instance_class", _LANG)


# -- accepted and ignored -------------------------------------------------------------------------
class _Metric:
    """The SDK's metrics go to its collector; yrmpi has none: every call is accepted and ignored."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kind = type(self).__name__
        if kind not in _warned:
            _warned.add(kind)
            log.warning("yr.%s: metrics have no collector in yrmpi; accepted and ignored", kind)
        self.value: float = 0

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *a, **k: None


class Gauge(_Metric):
    pass


class UInt64Counter(_Metric):
    pass


class DoubleCounter(_Metric):
    pass


class Alarm(_Metric):
    pass


class AlarmSeverity(IntEnum):
    OFF = 0
    INFO = 1
    MINOR = 2
    MAJOR = 3
    CRITICAL = 4


@dataclass
class AlarmInfo:
    alarm_name: str = ""
    alarm_severity: AlarmSeverity = AlarmSeverity.OFF
    location_info: str = ""
    cause: str = ""
    starts_at: int = -1
    ends_at: int = -1
    timeout: int = -1
    custom_options: dict = field(default_factory=dict)


@dataclass
class UserTLSConfig:
    """TLS to an openYuanrong cluster: MPI ranks need none (accepted, ignored)."""

    root_cert_path: str = ""
    module_cert_path: str = ""
    module_key_path: str = ""
    server_name: str | None = None


class SchedulingAffinityType(IntEnum):
    REQUIRED_AFFINITY_IN_EACH_BUNDLE = 0


@dataclass
class DeviceInfo:
    device_id: int = 0
    device_ip: str = ""
    rank_id: int = 0


@dataclass
class ServerInfo:
    devices: list = field(default_factory=list)
    server_id: str = ""
