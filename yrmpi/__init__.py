"""yrmpi: yr-style stateful functions on MPI ranks.

Rank 0 runs the driver script; the other ranks host instances. `import yrmpi as yr`, or plain
`import yr` under `python -m yrmpi` / `yrmpi run`.
"""

import os as _os

from . import collective

if _os.environ.get("OMPI_MCA_mpi_ft_enable") == "1":
    # Under ULFM, MPI_Finalize can hang (its failure-detector thread, ranks that died, serve
    # threads frozen at exit); the runtime ends the job in order itself (shutdown, then an
    # acknowledgement from every live rank), so the process exits without it.
    import mpi4py as _mpi4py

    _mpi4py.rc.finalize = False

from .api.functions import (
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
from .api.handles import FunctionProxy, InstanceCreator, InstanceHandle, instance, invoke, method
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
from .core.options import Config, InvokeOptions
from .core.refs import ObjectRef

__version__ = "0.1.0"

__all__ = [
    "CancelError", "Config", "DeadlockError", "FunctionProxy", "InstanceCreator", "InstanceExitedError",
    "InstanceHandle", "InvokeOptions", "ObjectRef", "ResourceError", "YRError", "YRInvokeError",
    "YRRuntimeError", "YRTimeoutError", "YRTypeError", "YRValueError", "cancel", "exit", "finalize",
    "get", "get_instance", "init", "instance", "invoke", "is_initialized", "kill_instance", "method",
    "put", "resources", "wait", "collective",
]
