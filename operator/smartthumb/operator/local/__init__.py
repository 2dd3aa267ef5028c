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
from smartthumb.operator.netguard import InvalidWebhookURL

__all__ = [
    "EngineConfigError",
    "EngineSettings",
    "InputError",
    "InputFile",
    "InvalidWebhookURL",
    "LocalEngine",
    "QueueFullError",
    "UnknownJobError",
]
