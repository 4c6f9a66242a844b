"""yrmpi: yr-style stateful functions on MPI ranks.

Rank 0 runs the driver script; the other ranks host instances. `import yrmpi as yr`, or plain
`import yr` under `python -m yrmpi` / `yrmpi run`.
"""

import os as _os

from . import collective

if _os.environ.get("OMPI_MCA_mpi_ft_detector_thread") == "true":
    # ULFM's failure-detector thread can hang MPI_Finalize when ranks finalize together;
    # the runtime ends the job in order itself (shutdown, acknowledged), so skip it.
    import mpi4py as _mpi4py

    _mpi4py.rc.finalize = False

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
    "put", "resources", "wait", "collective",
]
