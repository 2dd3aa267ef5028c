"""How the local engine is configured. The API builds it from SMARTTHUMB_* variables
(SMARTTHUMB_DATA_DIR, SMARTTHUMB_WORKERS, ... : the field name in upper case)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic.networks import IPvAnyNetwork
from smartthumb.operator.lifecycle import LifecyclePolicy
from standardwebhooks import Webhook


class EngineSettings(BaseModel):
    data_dir: Path = Field(description="Holds the SQLite store and each job's inputs and outputs.")
    workers: int = Field(
        default_factory=lambda: os.cpu_count() or 1, ge=1, description="Jobs run at the same time."
    )
    queue_capacity: int = Field(
        1000, ge=1, description="Most queued jobs; submitting more raises QueueFullError (429)."
    )
    memory_limit_mb: int = Field(
        1024,
        ge=64,
        description=(
            "Address-space limit (RLIMIT_AS) of one runner process, in MiB. It counts virtual "
            "memory, including the ~410 MiB the preloaded runner (numpy, OpenCV, face model) "
            "already maps; a 48-megapixel source needs about 640 MiB in all."
        ),
    )
    fallback_memory_limit_mb: int = Field(
        768,
        ge=64,
        description="The same limit for the light fallback that runs after an out-of-memory.",
    )
    worker_max_runs: int = Field(
        500, ge=1,
        description="A warm runner worker process is replaced after this many runs (bounds leaks "
        "in native libraries); any run that fails other than on bad input replaces it at once.",
    )
    job_timeout_s: float = Field(
        1800, gt=0, description="A runner still running after this is killed."
    )
    ttl_s: float = Field(
        7200, gt=0, description="A finished job and its files are deleted after this."
    )
    public_url: str = Field(
        "http://127.0.0.1:8080", description="Base of the job_url and image_url sent in webhooks."
    )
    webhook_secret: SecretStr | None = Field(
        None, description="whsec_... key: webhooks carry Standard Webhooks signatures when set."
    )
    webhook_timeout_s: float = Field(15, gt=0, description="Timeout of one webhook POST.")
    webhook_max_attempts: int = Field(6, ge=1, description="Webhook POSTs before giving up.")
    webhook_backoff_s: float = Field(
        5, gt=0, description="Delay before the first webhook retry; each next one is 4x longer."
    )
    webhook_backoff_max_s: float = Field(
        6 * 3600, gt=0, description="Longest delay between webhook retries (Retry-After too)."
    )
    allow_private_webhooks: bool | list[IPvAnyNetwork] = Field(
        False,
        description=(
            "Webhooks to loopback, private, link-local and other non-public addresses are "
            "refused; true allows them all, a list of CIDRs allows those ranges only."
        ),
    )
    sweep_interval_s: float = Field(
        30, gt=0, description="How often expired jobs are looked for (webhooks wake it earlier)."
    )

    @field_validator("allow_private_webhooks", mode="before")
    @classmethod
    def _parse_allowed(cls, value: object) -> object:
        # From the environment: true/false, a JSON list, or comma-separated CIDRs (as
        # SMARTTHUMB_API_TOKENS is); pydantic then validates each network.
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.lower() in ("", "false", "0", "no", "off"):
            return False
        if text.lower() in ("true", "1", "yes", "on"):
            return True
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]

    @field_validator("webhook_secret")
    @classmethod
    def _secret_is_usable(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is not None:
            Webhook(secret.get_secret_value())  # raises on a malformed key
        return secret

    @field_validator("public_url")
    @classmethod
    def _no_trailing_slash(cls, url: str) -> str:
        return url.rstrip("/")

    def policy(self) -> LifecyclePolicy:
        return LifecyclePolicy(
            ttl_s=self.ttl_s,
            webhook_max_attempts=self.webhook_max_attempts,
            webhook_backoff_s=self.webhook_backoff_s,
            webhook_backoff_max_s=self.webhook_backoff_max_s,
        )
