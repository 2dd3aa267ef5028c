"""The local backend: runner processes under memory limits, state in SQLite, no cluster."""

from smartthumb.operator.local.engine import EngineConfigError, LocalEngine
from smartthumb.operator.local.settings import EngineSettings

__all__ = ["EngineConfigError", "EngineSettings", "LocalEngine"]
