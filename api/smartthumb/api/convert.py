"""Format / width / quality variants of a finished image, cached on disk next to it.

The cache file's name encodes the variant, so a repeat request is a file lookup with no
decode or encode. It lives in the job's folder and goes away with the job at its TTL.
Decoding and encoding are the runner's own (`load.decode`: header first, JPEG drafted at the
size needed; `encode.save`: same options, atomic write), so a variant looks exactly like a job
asked for that format in the first place, and holds no more memory than such a job would.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path

from PIL import Image
from smartthumb.api.errors import ApiError
from smartthumb.api.limits import BUSY_RETRY_AFTER_S
from smartthumb.runner.encode import ALPHA_FORMATS, max_output_pixels, output_refusal, save
from smartthumb.runner.errors import BadInputError
from smartthumb.runner.limits import Limits
from smartthumb.runner.load import Source, decode, open_source
from smartthumb.runner.spec import OutputFormat

MAX_VARIANTS = 16
"""Distinct cached variants per job: width x quality x format must not fill disk and CPU."""

MAX_CONVERSIONS = 2
"""Variants made at the same time in the API process; each holds at most one decoded image
and one encoder within the output limits (an AVIF at its limit: ~300 MB). One more gets 503
with Retry-After rather than a wait: a waiting request would hold one of the request threads
every other route needs. Cached variants are served whatever the count."""

_conversions = threading.BoundedSemaphore(MAX_CONVERSIONS)


def variant_path(source: Path, fmt: OutputFormat, width: int, quality: int) -> Path:
    # PNG is lossless and ignores quality: one file per width, not a hundred identical ones.
    tag = "" if fmt is OutputFormat.png else f".q{quality}"
    return source.with_name(f"{source.stem}.w{width}{tag}.{fmt.extension}")


def _cached_variants(source: Path) -> int:
    return sum(1 for _ in source.parent.glob(f"{source.stem}.w*"))


def _height_at(opened: Source, width: int) -> int:
    return max(1, round(opened.height * width / opened.width))


def _widest_allowed(opened: Source, limit: int) -> int:
    """The widest variant of `opened` within `limit` pixels, for the refusal's hint."""
    width = min(opened.width, math.isqrt(limit * opened.width // opened.height))
    while width > 1 and width * _height_at(opened, width) > limit:
        width -= 1
    return width


def variant(
    source: Path,
    fmt: OutputFormat,
    width: int | None,
    quality: int,
    *,
    grayscale: bool,
    limits: Limits,
) -> Path:
    """The cached variant, made on first use; width never enlarges the image.

    429 once the job already has MAX_VARIANTS other variants. Concurrent first requests
    may overshoot the cap by MAX_CONVERSIONS; it stays bounded. 422 for a variant above the
    output limit of its format (its source is read as far as the header only), 503 while
    MAX_CONVERSIONS others are being made.
    """
    try:
        opened = open_source(source, limits)
    except BadInputError as error:  # a source over a limit lowered since the job ran
        raise ApiError(422, "variant_too_large", str(error)) from None
    try:
        target_width = min(width or opened.width, opened.width)
        target_height = _height_at(opened, target_width)
        target = variant_path(source, fmt, target_width, quality)
        if target.is_file():
            return target
        if _cached_variants(source) >= MAX_VARIANTS:
            raise ApiError(
                429,
                "too_many_variants",
                f"this job already has {MAX_VARIANTS} cached variants (format/width/quality); "
                "ask for one of those or for the image as it is",
            )
        refusal = output_refusal(target_width, target_height, fmt, limits.max_pixels)
        if refusal is not None:
            widest = _widest_allowed(opened, max_output_pixels(fmt, limits.max_pixels))
            raise ApiError(422, "variant_too_large", f"{refusal} (width={widest} fits)")
        if not _conversions.acquire(blocking=False):
            raise ApiError(
                503,
                "server_busy",
                f"{MAX_CONVERSIONS} image variants are being made; retry shortly",
                {"Retry-After": BUSY_RETRY_AFTER_S},
            )
        try:
            # The runner's alpha rule: kept where the format can hold it, else flattened on white.
            image = decode(opened, target_width / opened.width, keep_alpha=fmt in ALPHA_FORMATS)
            if image.size != (target_width, target_height):
                image = image.resize((target_width, target_height), Image.Resampling.LANCZOS)
            save(image, target, fmt, quality, grayscale=grayscale)
        finally:
            _conversions.release()
    finally:
        opened.close()
    return target
