"""`yr.fcc`: function groups (see yrmpi/api/fcc.py)."""

from .api.fcc import (
    FunctionGroupContext,
    FunctionGroupHandler,
    FunctionGroupMethodProxy,
    FunctionGroupOptions,
    create_function_group,
    get_function_group_context,
)

__all__ = ["FunctionGroupContext", "FunctionGroupHandler", "FunctionGroupMethodProxy", "FunctionGroupOptions",
           "create_function_group", "get_function_group_context"]
