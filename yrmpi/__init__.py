"""yrmpi: yr-style stateful functions on MPI ranks.

Rank 0 runs the driver script; the other ranks host instances. `import yrmpi as yr`, or plain
`import yr` under `python -m yrmpi` / `yrmpi run`.
"""

import os as _os

from .core import startup as _startup

_startup.hold_stop_signals()  # first: a stop signal while the `yrmpi` command imports is held, not fatal

from . import collective

if _os.environ.get("OMPI_MCA_mpi_ft_enable") == "1":
    # Under ULFM, MPI_Finalize can hang (its failure-detector thread, ranks that died, serve
    # threads frozen at exit); the runtime ends the job in order itself (shutdown, then an
    # acknowledgement from every live rank), so the process exits without it.
    import mpi4py as _mpi4py

    _mpi4py.rc.finalize = False

from . import fcc  # `yr.fcc.create_function_group`
from .api.fcc import (
    FunctionGroupContext,
    FunctionGroupHandler,
    FunctionGroupMethodProxy,
    create_function_group,
    get_function_group_context,
)
from .api.functions import (
    ClientInfo,
    cancel,
    exit,
    finalize,
    get,
    get_instance,
    get_node_ip_address,
    init,
    is_initialized,
    kill_instance,
    list_named_instances,
    put,
    resources,
    wait,
)
from .api.groups import Group, ResourceGroup, create_resource_group, remove_resource_group
from .api.handles import (
    FunctionProxy,
    InstanceCreator,
    InstanceHandle,
    InstanceProxy,
    MethodProxy,
    instance,
    invoke,
    method,
)
from .api.kv import (
    CacheType,
    ConsistencyType,
    CreateParam,
    ExistenceOpt,
    GetParam,
    GetParams,
    MSetParam,
    SetParam,
    WriteMode,
    kv_del,
    kv_get,
    kv_get_with_param,
    kv_m_write_tx,
    kv_read,
    kv_set,
    kv_write,
    kv_write_with_param,
    load_state,
    save_state,
)
from .api.unsupported import (
    Alarm,
    AlarmInfo,
    AlarmSeverity,
    Context,
    DeviceInfo,
    DoubleCounter,
    Element,
    Function,
    Gauge,
    ProducerConfig,
    SchedulingAffinityType,
    ServerInfo,
    SubscriptionConfig,
    UInt64Counter,
    UserTLSConfig,
    cpp_function,
    cpp_instance_class,
    create_stream_consumer,
    create_stream_producer,
    delete_stream,
    go_function,
    go_instance_class,
    java_function,
    java_instance_class,
    query_global_consumers_num,
    query_global_producers_num,
)
from .core.affinity import Affinity, AffinityKind, AffinityScope, AffinityType, LabelOperator, OperatorType
from .core.errors import (
    CancelError,
    DeadlockError,
    InstanceExitedError,
    ResourceError,
    YRError,
    YRInvokeError,
    YRRuntimeError,
    YRTimeoutError,
    YRTypeError,
    YRValueError,
)
from .core.options import Config, FunctionGroupOptions, GroupOptions, InvokeOptions, ResourceGroupOptions
from .core.refs import ObjectRef

__version__ = "0.1.0"

__all__ = [
    "CancelError", "ClientInfo", "Config", "DeadlockError", "FunctionProxy", "InstanceCreator", "InstanceExitedError",
    "InstanceHandle", "InstanceProxy", "InvokeOptions", "MethodProxy", "ObjectRef", "ResourceError", "YRError",
    "YRInvokeError", "YRRuntimeError", "YRTimeoutError", "YRTypeError", "YRValueError", "cancel", "exit", "finalize",
    "get", "get_instance", "get_node_ip_address", "init", "instance", "invoke", "is_initialized", "kill_instance",
    "list_named_instances", "method", "put", "resources", "wait", "collective",
    "CacheType", "ConsistencyType", "CreateParam", "ExistenceOpt", "GetParam", "GetParams", "MSetParam", "SetParam",
    "WriteMode", "kv_del", "kv_get", "kv_get_with_param", "kv_m_write_tx", "kv_read", "kv_set", "kv_write",
    "kv_write_with_param", "load_state", "save_state",
    "Affinity", "AffinityKind", "AffinityScope", "AffinityType", "LabelOperator", "OperatorType",
    "FunctionGroupOptions", "Group", "GroupOptions", "ResourceGroup", "ResourceGroupOptions",
    "create_resource_group", "remove_resource_group", "fcc", "FunctionGroupContext", "FunctionGroupHandler",
    "FunctionGroupMethodProxy", "create_function_group", "get_function_group_context",
    # accepted and ignored (metrics, TLS, device info), or out of scope with a clear error at use
    "Alarm", "AlarmInfo", "AlarmSeverity", "Context", "DeviceInfo", "DoubleCounter", "Element", "Function", "Gauge",
    "ProducerConfig", "SchedulingAffinityType", "ServerInfo", "SubscriptionConfig", "UInt64Counter", "UserTLSConfig",
    "cpp_function", "cpp_instance_class", "create_stream_consumer", "create_stream_producer", "delete_stream",
    "go_function", "go_instance_class", "java_function", "java_instance_class", "query_global_consumers_num",
    "query_global_producers_num",
]
