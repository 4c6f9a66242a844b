"""`yr.config`: where yr code imports the option and config classes from."""

from .api.functions import ClientInfo
from .core.options import Config, InvokeOptions

__all__ = ["ClientInfo", "Config", "InvokeOptions"]
