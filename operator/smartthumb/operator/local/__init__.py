"""The local backend: runner processes under memory limits, state in SQLite, no cluster."""

from smartthumb.operator.local.engine import (
    EngineConfigError,
    InputError,
    InputFile,
    LocalEngine,
    QueueFullError,
    UnknownJobError,
)
from smartthumb.operator.local.settings import EngineSettings
from smartthumb.runner.netguard import RefusedURL

__all__ = [
    "EngineConfigError",
    "EngineSettings",
    "InputError",
    "InputFile",
    "RefusedURL",
    "LocalEngine",
    "QueueFullError",
    "UnknownJobError",
]
