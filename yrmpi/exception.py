"""`yr.exception`: the error classes, where yr code imports them from."""

from .core.errors import (  # noqa: F401
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

__all__ = ["CancelError", "DeadlockError", "InstanceExitedError", "ResourceError", "YRError", "YRInvokeError",
           "YRRuntimeError", "YRTimeoutError", "YRTypeError", "YRValueError"]
