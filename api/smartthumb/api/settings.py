"""ApiSettings: the SMARTTHUMB_* environment variables of the HTTP front itself.

The backend it runs jobs on (SMARTTHUMB_BACKEND) reads its own: EngineSettings (local mode)
or KubernetesBackendSettings, so one mode's knobs are not the other's.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated

from pydantic import Field, PrivateAttr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from smartthumb.operator.backend import BackendKind
from smartthumb.runner.limits import Limits, split_commas

MiB = 1024 * 1024


class ApiSettings(BaseSettings):
    """Settings of `smartthumb-api` (environment prefix SMARTTHUMB_)."""

    model_config = SettingsConfigDict(env_prefix="SMARTTHUMB_", extra="ignore")

    backend: BackendKind = Field(
        BackendKind.local,
        description=(
            "Where jobs run: `local` (runner processes on this machine, SQLite) or "
            "`kubernetes` (ThumbnailJob resources, run by smartthumb-operator)."
        ),
    )
    public_url: str = Field(
        "http://127.0.0.1:8080",
        description=(
            "Base of every URL handed out (job_url, image_url, webhooks), e.g. behind a proxy. "
            "Unset: API answers use the URL the client called, webhooks http://HOST:PORT."
        ),
    )
    host: str = Field("127.0.0.1", description="Address the HTTP server listens on.")
    api_processes: int = Field(
        default_factory=lambda: len(os.sched_getaffinity(0)),  # the cores it may run on
        ge=1,
        description=(
            "HTTP server processes sharing the port. In local mode they share one engine, run "
            "by the process that starts them; 1: one process does it all."
        ),
    )
    port: int = Field(8080, ge=0, le=65535, description="TCP port of the HTTP server.")
    access_log: bool = Field(
        False, description="Log one line per HTTP request (uvicorn's access log) to stderr."
    )
    input_root: Path | None = Field(
        None,
        description=(
            "Folder that `image_path`/`image_paths` of POST /thumbnail may read from; paths "
            "resolving outside it (`..`, absolute paths, symlink escapes) are refused. Unset: "
            "server-side paths are refused altogether and only uploads are accepted."
        ),
    )
    api_tokens: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Comma-separated bearer tokens. When set, every endpoint except /health, /healthz, "
            "/readyz, the web page shell and the API docs needs `Authorization: Bearer <token>`."
        ),
    )
    allow_anonymous: bool = Field(
        False,
        description=(
            "Serve without SMARTTHUMB_API_TOKENS on an address other than loopback (anyone who "
            "can reach it may submit jobs). Off: smartthumb-api refuses to start that way."
        ),
    )
    max_inline_bytes: int = Field(
        20 * MiB, gt=0, description="Largest single uploaded image (base64 or multipart), bytes."
    )
    max_images: int = Field(
        50, gt=0, description="Most images in one request (one job's pages, or one batch)."
    )
    max_upload_bytes: int = Field(
        256 * MiB,
        gt=0,
        description=(
            "Largest request body, JSON or multipart, in bytes; checked before the body is read "
            "(Content-Length) and while it streams."
        ),
    )
    max_in_flight_bytes: int = Field(
        512 * MiB,
        gt=0,
        description=(
            "Request bodies all requests in flight may hold together, in bytes (counted as "
            "they arrive, spooled to disk past 1 MiB); past it new uploads get 503 with "
            "Retry-After."
        ),
    )
    header_timeout_s: float = Field(
        10.0, gt=0, description="Seconds a client has to send a request's line and headers (408)."
    )
    body_timeout_s: float = Field(
        120.0, gt=0, description="Seconds a client has to send a whole request body (408)."
    )
    max_wait_s: float = Field(
        30.0,
        ge=0,
        description="Longest long-poll a client may ask for with GET /job/{id}?wait=<seconds>.",
    )

    _limits: Limits = PrivateAttr(default_factory=Limits)

    _split_tokens = field_validator("api_tokens", mode="before")(split_commas)

    @field_validator("public_url")
    @classmethod
    def _no_trailing_slash(cls, url: str) -> str:
        return url.rstrip("/")

    @model_validator(mode="after")
    def _one_upload_fits_in_flight(self) -> ApiSettings:
        if self.max_in_flight_bytes < self.max_upload_bytes:
            raise ValueError(
                "SMARTTHUMB_MAX_IN_FLIGHT_BYTES must be at least SMARTTHUMB_MAX_UPLOAD_BYTES, "
                "or no upload of the largest allowed size could ever be accepted"
            )
        return self

    @model_validator(mode="after")
    def _no_anonymous_network_listener(self) -> ApiSettings:
        if not self.api_tokens and not self.allow_anonymous and not self.loopback_only:
            raise ValueError(
                f"SMARTTHUMB_HOST={self.host} is reachable from the network and "
                "SMARTTHUMB_API_TOKENS is empty: set tokens, or SMARTTHUMB_ALLOW_ANONYMOUS=true "
                "to serve anyone who can reach it"
            )
        return self

    @model_validator(mode="after")
    def _read_runner_limits(self) -> ApiSettings:
        # The runner reads its limits itself (it is a CLI); reading them here once makes a bad
        # value a start-up error instead of a 500 on every upload.
        self._limits = Limits.from_env()
        return self

    @property
    def limits(self) -> Limits:
        """The runner's source limits (pixels, URL sources), as read at start-up."""
        return self._limits

    @property
    def max_pixels(self) -> int:
        """The runner's source limit, as read at start-up."""
        return self._limits.max_pixels

    @property
    def loopback_only(self) -> bool:
        """True when only this machine can reach the listener."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:  # a host name: it may resolve to anything
            return False

    @property
    def public_url_configured(self) -> bool:
        """False: links follow the URL each client used; true: always SMARTTHUMB_PUBLIC_URL."""
        return "public_url" in self.model_fields_set

    def webhook_public_url(self) -> str:
        """The base of the links in webhooks: they leave the process, so without
        SMARTTHUMB_PUBLIC_URL it is this server's own address."""
        if self.public_url_configured:
            return self.public_url
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"
