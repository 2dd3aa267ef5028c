"""Format / width / quality variants of a finished image, cached on disk next to it.

The cache file's name encodes the variant, so a repeat request is a file lookup with no
decode or encode. It lives in the job's folder and goes away with the job at its TTL.
Encoding is the runner's own (`encode.save`: same options, atomic write), so a variant
looks exactly like a job asked for that format in the first place.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from smartthumb.api.errors import ApiError
from smartthumb.runner.encode import ALPHA_FORMATS, save
from smartthumb.runner.load import to_rgb
from smartthumb.runner.spec import OutputFormat

MAX_VARIANTS = 16
"""Distinct cached variants per job: width x quality x format must not fill disk and CPU."""


def parse_format(name: str) -> OutputFormat:
    return OutputFormat.jpeg if name == "jpg" else OutputFormat(name)


def variant_path(source: Path, fmt: OutputFormat, width: int, quality: int) -> Path:
    # PNG is lossless and ignores quality: one file per width, not a hundred identical ones.
    tag = "" if fmt is OutputFormat.png else f".q{quality}"
    return source.with_name(f"{source.stem}.w{width}{tag}.{fmt.extension}")


def _cached_variants(source: Path) -> int:
    return sum(1 for _ in source.parent.glob(f"{source.stem}.w*"))


def variant(
    source: Path, fmt: OutputFormat, width: int | None, quality: int, *, grayscale: bool
) -> Path:
    """The cached variant, made on first use; width never enlarges the image.

    429 once the job already has MAX_VARIANTS other variants. Concurrent first requests
    may overshoot the cap by the number of request threads; it stays bounded.
    """
    with Image.open(source) as image:
        target_width = min(width or image.width, image.width)
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
        image.load()
        # The runner's alpha rule: kept where the format can hold it, else flattened on white.
        converted = to_rgb(image, keep_alpha=fmt in ALPHA_FORMATS)
        if target_width != converted.width:
            height = max(1, round(converted.height * target_width / converted.width))
            converted = converted.resize((target_width, height), Image.Resampling.LANCZOS)
        save(converted, target, fmt, quality, grayscale=grayscale)
    return target
