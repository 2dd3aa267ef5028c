"""The local backend: runner processes under memory limits, state in SQLite, no cluster."""

from smartthumb.operator.local.engine import InputError, InputFile, LocalEngine, QueueFullError
from smartthumb.operator.local.settings import EngineSettings

__all__ = ["EngineSettings", "InputError", "InputFile", "LocalEngine", "QueueFullError"]
