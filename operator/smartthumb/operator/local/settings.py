"""How the local engine is configured: SMARTTHUMB_* variables (SMARTTHUMB_DATA_DIR,
SMARTTHUMB_WORKERS, ... : the field name in upper case), read when the API runs in local mode."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, cast

from pydantic import Field, field_validator, model_validator
from pydantic.networks import IPvAnyNetwork
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from smartthumb.operator.lifecycle import LifecyclePolicy
from smartthumb.operator.models import MemoryPlan
from smartthumb.operator.settings import WebhookSettings


class EngineSettings(WebhookSettings, BaseSettings):
    """Settings of the local backend (environment prefix SMARTTHUMB_)."""

    model_config = SettingsConfigDict(env_prefix="SMARTTHUMB_", extra="ignore")

    data_dir: Path = Field(
        Path("var/smartthumb"),
        description="Holds the SQLite store and each job's inputs and outputs.",
    )
    workers: int = Field(
        default_factory=lambda: os.cpu_count() or 1, ge=1, description="Jobs run at the same time."
    )
    queue_capacity: int = Field(
        1000, ge=1, description="Most queued jobs; submitting more raises QueueFullError (429)."
    )
    memory_limit_mb: int = Field(
        1152,
        ge=64,
        description=(
            "Address-space limit (RLIMIT_AS) of one runner process, in MiB. It counts virtual "
            "memory: what the preloaded runner (numpy, OpenCV, the face detector) already maps, "
            "and the ~125 MiB the face detector's buffers add while it looks at a large image."
        ),
    )
    fallback_memory_limit_mb: int = Field(
        768,
        ge=64,
        description="The same limit for the light fallback that runs after an out-of-memory.",
    )
    max_memory_limit_mb: int | None = Field(
        None,
        ge=64,
        description=(
            "A main run that runs out of memory is retried with double the limit up to this "
            "many MiB before the fallback runs; unset: no retries, straight to the fallback."
        ),
    )
    worker_max_runs: int = Field(
        500,
        ge=1,
        description="A warm runner worker process is replaced after this many runs (bounds leaks "
        "in native libraries); any run that fails other than on bad input replaces it at once.",
    )
    runner_start_timeout_s: float = Field(
        120,
        gt=0,
        description=(
            "How long the runner fork server may take to start (import and warm up the runner, "
            "torch too with THUMBNAIL_YOLO_MODEL); one that takes longer is killed and started "
            "again, while jobs wait in the queue."
        ),
    )
    job_timeout_s: float = Field(
        1800, gt=0, description="A runner still running after this is killed."
    )
    ttl_s: float = Field(
        7200, gt=0, description="A finished job and its files are deleted after this."
    )
    public_url: str = Field(
        "http://127.0.0.1:8080",
        description="Base of the job_url and image_url sent in webhooks (the API passes its own).",
    )
    # Read raw (NoDecode): the validator takes true/false, CIDRs or JSON. (Its FieldInfo as the
    # default, which pydantic takes and its types do not: cast to Any.)
    allow_private_webhooks: Annotated[bool | list[IPvAnyNetwork], NoDecode] = cast(
        Any, WebhookSettings.model_fields["allow_private_webhooks"]
    )
    sweep_interval_s: float = Field(
        30, gt=0, description="How often expired jobs are looked for (webhooks wake it earlier)."
    )

    @field_validator("public_url")
    @classmethod
    def _no_trailing_slash(cls, url: str) -> str:
        return url.rstrip("/")

    @model_validator(mode="after")
    def _ladder_goes_up(self) -> EngineSettings:
        if self.max_memory_limit_mb is not None and self.max_memory_limit_mb < self.memory_limit_mb:
            raise ValueError(
                "SMARTTHUMB_MAX_MEMORY_LIMIT_MB must be at least SMARTTHUMB_MEMORY_LIMIT_MB"
            )
        return self

    def memory_plan(self) -> MemoryPlan:
        return MemoryPlan(
            main_mb=self.memory_limit_mb,
            fallback_mb=self.fallback_memory_limit_mb,
            max_mb=self.max_memory_limit_mb or self.memory_limit_mb,
        )

    def policy(self) -> LifecyclePolicy:
        return self.lifecycle_policy(self.ttl_s)
