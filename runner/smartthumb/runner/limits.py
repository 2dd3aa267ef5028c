"""Source limits that protect the runner from decompression bombs and absurd inputs."""

from __future__ import annotations

import os

from pydantic import BaseModel, Field

DEFAULT_MAX_PIXELS = 50_000_000
"""Same default as imgproxy: 50 megapixels per source image."""


class Limits(BaseModel):
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, gt=0, description="Largest source, in pixels.")

    @classmethod
    def from_env(cls) -> Limits:
        value = os.environ.get("SMARTTHUMB_MAX_PIXELS")
        return cls(max_pixels=int(value)) if value else cls()
