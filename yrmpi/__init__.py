"""yrmpi: yr-style stateful functions on MPI ranks.

Rank 0 runs the driver script; the other ranks host instances. `import yrmpi as yr`, or plain
`import yr` under `python -m yrmpi` / `yrmpi run`.
"""

from .api import (
    cancel,
    exit,
    finalize,
    get,
    get_instance,
    init,
    is_initialized,
    kill_instance,
    put,
    resources,
    wait,
)
from .errors import (
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
from .handles import FunctionProxy, InstanceCreator, InstanceHandle, instance, invoke, method
from .objectref import ObjectRef
from .options import Config, InvokeOptions

__version__ = "0.1.0"

__all__ = [
    "CancelError", "Config", "DeadlockError", "FunctionProxy", "InstanceCreator", "InstanceExitedError",
    "InstanceHandle", "InvokeOptions", "ObjectRef", "ResourceError", "YRError", "YRInvokeError",
    "YRRuntimeError", "YRTimeoutError", "YRTypeError", "YRValueError", "cancel", "exit", "finalize",
    "get", "get_instance", "init", "instance", "invoke", "is_initialized", "kill_instance", "method",
    "put", "resources", "wait",
]
