"""GET /health, /healthz and /readyz."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel
from smartthumb.operator.models import QueueStats


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    queue: QueueStats


class Readiness(BaseModel):
    ready: bool
    reason: str | None = None
