"""Format / width / quality variants of a finished image, cached on disk next to it.

The cache file's name encodes the variant, so a repeat request is a file lookup with no
decode or encode. It lives in the job's folder and goes away with the job at its TTL.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from PIL import Image
from smartthumb.runner.spec import OutputFormat

_PILLOW_FORMATS = {
    OutputFormat.jpeg: "JPEG",
    OutputFormat.png: "PNG",
    OutputFormat.webp: "WEBP",
    OutputFormat.avif: "AVIF",
}


def parse_format(name: str) -> OutputFormat:
    return OutputFormat.jpeg if name == "jpg" else OutputFormat(name)


def variant_path(source: Path, fmt: OutputFormat, width: int, quality: int) -> Path:
    return source.with_name(f"{source.stem}.w{width}.q{quality}.{fmt.extension}")


def variant(source: Path, fmt: OutputFormat, width: int | None, quality: int) -> Path:
    """The cached variant, made on first use; width never enlarges the image."""
    with Image.open(source) as image:
        target_width = min(width or image.width, image.width)
        target = variant_path(source, fmt, target_width, quality)
        if target.is_file():
            return target
        image.load()
        converted = image
        if target_width != image.width:
            height = max(1, round(image.height * target_width / image.width))
            converted = image.resize((target_width, height), Image.Resampling.LANCZOS)
        if fmt is OutputFormat.jpeg and converted.mode not in ("RGB", "L"):
            converted = converted.convert("RGB")
        _save_atomically(converted, target, fmt, quality)
    return target


def _save_atomically(image: Image.Image, target: Path, fmt: OutputFormat, quality: int) -> None:
    # Concurrent requests for the same variant each write a private file and rename it.
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".variant-")
    try:
        with os.fdopen(handle, "wb") as stream:
            image.save(stream, _PILLOW_FORMATS[fmt], quality=quality)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
