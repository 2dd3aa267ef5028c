"""What the HTTP API needs from a backend, and the errors every backend raises.

Two backends implement `Backend`: the local engine (runner processes, SQLite) and the
Kubernetes backend (ThumbnailJob resources run by the operator). The API depends on this
module only; `create_backend` is the one place that picks an implementation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import Enum
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict, model_validator
from smartthumb.operator.models import Job, QueueStats
from smartthumb.runner.netguard import AllowPrivate, RefusedURL, check_url
from smartthumb.runner.spec import ThumbnailSpec


class BackendKind(str, Enum):
    local = "local"
    kubernetes = "kubernetes"


class InputFile(BaseModel):
    """One input image: its bytes (an upload, or a server file the API read at submit, so a
    path can never change under the runner), or an http(s) URL the runner fetches (through
    its SSRF guard)."""

    model_config = ConfigDict(frozen=True)

    name: str
    data: bytes | None = None
    url: str | None = None

    @model_validator(mode="after")
    def _exactly_one_source(self) -> InputFile:
        if (self.data is None) == (self.url is None):
            raise ValueError("an input needs exactly one of data and url")
        return self


class BackendStartError(RuntimeError):
    """The backend cannot start with these settings or in this state; the message says why
    (the API prints it as one line and exits)."""


class QueueFullError(Exception):
    """The queue holds its capacity of jobs already: try again later (HTTP 429)."""


class InputError(ValueError):
    """The inputs of a submission are unusable (HTTP 400)."""


class WebhookRefusedError(ValueError):
    """The webhook URL is malformed or reaches a refused address (HTTP 400)."""


class UnknownJobError(LookupError):
    """No such job, or it has expired (HTTP 404)."""


def check_webhook(url: str | None, allow: AllowPrivate) -> None:
    """Raise WebhookRefusedError unless `url` (when there is one) may be called."""
    if url is None:
        return
    try:
        check_url(url, allow)
    except RefusedURL as error:
        raise WebhookRefusedError(f"webhook_url: {error}") from None


class Backend(Protocol):
    """Runs thumbnail jobs. Every method may be called from any thread."""

    ttl_s: float
    """A finished job and its files are deleted this many seconds after it ends."""
    submits_locally: bool
    """True when `submit` only writes local files and memory (no network round trip, no
    wait on another process): the API may then call it for a small body on its event loop,
    where the thread hop would cost more than the submit."""

    def start(self) -> None:
        """Ready the backend (recover state, start threads); raises on unusable settings."""

    def stop(self, graceful: bool = True) -> None:
        """Stop its threads; graceful: let what runs here finish first (briefly)."""

    def healthy(self) -> bool:
        """Liveness: the backend's own threads work (not whether its dependencies answer)."""

    def unready_reason(self) -> str | None:
        """Readiness: why jobs cannot be accepted now, or None when they can."""

    def submit(
        self,
        spec: ThumbnailSpec,
        inputs: Sequence[InputFile],
        *,
        webhook_url: str | None = None,
        batch_id: str | None = None,
        api_url: str | None = None,
    ) -> Job:
        """Queue one job. Raises InputError, WebhookRefusedError or QueueFullError.
        `api_url`: where the client reached the API, the base of the webhook's links."""

    def submit_batch(
        self, spec: ThumbnailSpec, inputs: Sequence[InputFile], batch_id: str
    ) -> list[Job]:
        """One job per input sharing `batch_id`: all queued, or none (QueueFullError)."""

    def get(self, job_id: str) -> Job | None:
        """The job, or None when it is unknown or has expired. Served from memory without
        blocking on I/O (so is `list_batch` and `stats`): the API calls it on its event loop."""

    def wait(self, job_id: str, timeout: float) -> Job:
        """The job once done or failed. Raises UnknownJobError, or TimeoutError."""

    def subscribe(self, job_id: str, changed: Callable[[], None]) -> Callable[[], None]:
        """Call `changed()` after each change of the job (deletion included), from a thread
        of the backend's, which it must not block; returns the function that stops it."""

    def cancel(self, job_id: str) -> None:
        """Stop the job if it runs; delete it and its files. Raises UnknownJobError."""

    def list_batch(self, batch_id: str) -> list[Job]:
        """The batch's jobs that still exist, oldest first."""

    def output_file(self, job: Job) -> Path | None:
        """The thumbnail of a done job as a local file (variants are cached beside it)."""

    def output_url(self, job: Job) -> str | None:
        """A URL the client may fetch a done job's thumbnail from itself (presigned), or
        None: the API serves `output_file`."""

    def stats(self) -> QueueStats:
        """Queued and running jobs, queue capacity and parallelism."""


def create_backend(kind: BackendKind, public_url: str) -> Backend:
    """The backend `kind`, configured from its own SMARTTHUMB_* variables; `public_url` is
    the API's address, for the links in webhooks the backend sends."""
    if kind is BackendKind.kubernetes:
        from smartthumb.operator.kube.backend import KubernetesBackend
        from smartthumb.operator.kube.settings import KubernetesBackendSettings

        return KubernetesBackend(KubernetesBackendSettings())
    from smartthumb.operator.local.engine import LocalEngine
    from smartthumb.operator.local.settings import EngineSettings

    return LocalEngine(EngineSettings(public_url=public_url))
