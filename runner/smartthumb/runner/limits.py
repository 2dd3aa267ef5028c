"""Source limits that protect the runner from decompression bombs, absurd inputs and URL
sources that reach where they should not."""

from __future__ import annotations

import json
import os
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, Field, ValidationError, field_validator
from pydantic.networks import IPvAnyNetwork

DEFAULT_MAX_PIXELS = 50_000_000
"""Same default as imgproxy: 50 megapixels per source image."""

MiB = 1024 * 1024
MAX_INPUTS = 200
"""Most input images of one run (a chapter's pages)."""


def is_url(text: str) -> bool:
    """An http(s) URL rather than a file path (runner inputs and outputs may be either).
    Here, not in netguard: the CLI asks for every run, and httpx is imported only for URLs
    (the fallback must stay small under its memory limit)."""
    return text.lower().startswith(("http://", "https://"))


def split_commas(value: object) -> object:
    """A comma-separated environment variable as a list (other values pass through)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def parse_allow_private(value: object) -> object:
    """Before-validator of an allow-private setting: true/false, a JSON list, or
    comma-separated CIDRs; pydantic then validates each network."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.lower() in ("", "false", "0", "no", "off"):
        return False
    if text.lower() in ("true", "1", "yes", "on"):
        return True
    if text.startswith("["):
        return json.loads(text)
    return split_commas(text)


AllowPrivateSetting = Annotated[bool | list[IPvAnyNetwork], BeforeValidator(parse_allow_private)]
"""netguard.AllowPrivate as a setting: False refuses every non-public address, True allows
them all, a list of CIDRs allows those ranges only."""


class Limits(BaseModel):
    """Each field is read from SMARTTHUMB_<FIELD NAME IN CAPITALS> by from_env."""

    max_pixels: int = Field(
        DEFAULT_MAX_PIXELS,
        gt=0,
        description="Largest source image in pixels (decompression-bomb limit), and largest "
        "output (AVIF: a fifth of it, WebP: half; their encoders hold more per pixel); the API "
        "checks both.",
    )
    max_source_bytes: int = Field(
        50 * MiB, gt=0, description="Largest URL source, in bytes (the download stops there)."
    )
    source_timeout_s: float = Field(
        30, gt=0, description="Whole download (redirects included) of one URL source; upload."
    )
    allowed_sources: Annotated[list[str], BeforeValidator(split_commas)] = Field(
        default_factory=list,
        description=(
            "URL prefixes sources may start with, like imgproxy's IMGPROXY_ALLOWED_SOURCES: "
            "'*' matches any characters but '/' (https://*.example.com/); scheme and host in "
            "lower case. Empty: any public host."
        ),
    )
    allow_private_sources: AllowPrivateSetting = Field(
        False,
        description="Non-public addresses URL sources and uploads may reach: true, or "
        "comma-separated CIDRs (an in-cluster S3 endpoint must be listed).",
    )

    @field_validator("allowed_sources")
    @classmethod
    def _are_urls(cls, prefixes: list[str]) -> list[str]:
        for prefix in prefixes:
            if not prefix.startswith(("http://", "https://")):
                raise ValueError(f"{prefix!r} is not an http(s):// URL prefix")
        return prefixes

    @classmethod
    def from_env(cls) -> Limits:
        """Raises ValueError naming the environment variable that is wrong."""
        values = {
            name: os.environ[variable]
            for name in cls.model_fields
            if os.environ.get(variable := env_name(name))
        }
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            first = error.errors()[0]
            variable = env_name(str(first["loc"][0]))
            raw = os.environ.get(variable)
            raise ValueError(f"{variable}: {first['msg']}, not {raw!r}") from None


def env_name(field: str) -> str:
    return f"SMARTTHUMB_{field.upper()}"
