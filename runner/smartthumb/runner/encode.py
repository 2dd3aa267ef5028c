"""Write the finished thumbnail in the requested format: atomically to a file, or upload it."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

from PIL import Image
from smartthumb.runner.spec import OutputFormat, OutputReport

ALPHA_FORMATS = {OutputFormat.png, OutputFormat.webp, OutputFormat.avif}

ENCODE_COST = {
    OutputFormat.jpeg: 1,
    OutputFormat.png: 1,
    OutputFormat.webp: 2,
    OutputFormat.avif: 5,
}
"""What an output pixel costs while it is encoded, in decoded source pixels:
SMARTTHUMB_MAX_PIXELS divided by it is the largest output of the format. Measured peak RSS of
the runner: JPEG and PNG take ~4 bytes a pixel beyond its ~140 MB (50 MP: 345 MB), WebP ~10
(25 MP: 383 MB), AVIF's libaom ~30 (10 MP: 440 MB; 8192x8192: 2 GB). So at the defaults every
format's largest output fits the runner pod's 512Mi and the local engine's 1024 MiB of address
space; the light fallback's smaller limit is not sized for them."""


def max_output_pixels(fmt: OutputFormat, max_pixels: int) -> int:
    return max_pixels // ENCODE_COST[fmt]


def output_refusal(width: int, height: int, fmt: OutputFormat, max_pixels: int) -> str | None:
    """Why a width x height output in `fmt` is not made (None: it is): it would hold more
    memory than the source limit allows, whether enlarged or converted."""
    limit = max_output_pixels(fmt, max_pixels)
    if width * height <= limit:
        return None
    share = "" if ENCODE_COST[fmt] == 1 else f"1/{ENCODE_COST[fmt]} of "
    return (
        f"a {width}x{height} {fmt.value} output is {width * height / 1e6:.1f} MP, above the "
        f"limit of {limit / 1e6:.1f} MP for {fmt.value} ({share}SMARTTHUMB_MAX_PIXELS); ask "
        "for a smaller size or another format"
    )


class Upload(Protocol):
    """An output that is not a file (fetch.RemoteOutput: a presigned PUT URL)."""

    def put(self, data: bytes, media_type: str) -> None: ...


def _save_options(fmt: OutputFormat, quality: int) -> dict[str, Any]:
    if fmt is OutputFormat.jpeg:
        return {"format": "JPEG", "quality": quality, "optimize": False}
    if fmt is OutputFormat.png:
        return {"format": "PNG", "compress_level": 6}
    if fmt is OutputFormat.webp:
        return {"format": "WEBP", "quality": quality, "method": 4}
    # speed 8: ~3x faster than the default for a few per cent more bytes. One thread: each
    # libaom thread adds a malloc arena of address space, so with one per CPU a 16-core machine
    # failed an 8 MP AVIF under the local engine's RLIMIT_AS (a runner has one CPU's worth).
    return {"format": "AVIF", "quality": quality, "speed": 8, "max_threads": 1}


def prepare(image: Image.Image, fmt: OutputFormat, *, grayscale: bool) -> Image.Image:
    """Colour mode the encoder accepts: grey stays grey, alpha only where it is kept."""
    if grayscale:
        alpha = image.getchannel("A") if image.mode == "RGBA" and fmt in ALPHA_FORMATS else None
        image = image.convert("L")
        if alpha is not None:
            image = Image.merge("LA", (image, alpha))
        if fmt in (OutputFormat.webp, OutputFormat.avif):
            # These encoders only take RGB(A); the picture stays grey.
            image = image.convert("RGBA" if alpha is not None else "RGB")
        return image
    if image.mode == "RGBA" and fmt not in ALPHA_FORMATS:
        return image.convert("RGB")
    return image


def save(
    image: Image.Image,
    destination: Path | Upload,
    fmt: OutputFormat,
    quality: int,
    *,
    grayscale: bool = False,
) -> OutputReport:
    """Encode next to the destination file, then rename: readers never see half a file. An
    upload is encoded in memory (the runner pod's root filesystem is read-only)."""
    ready = prepare(image, fmt, grayscale=grayscale)
    options = _save_options(fmt, quality)
    if isinstance(destination, Path):
        size = _write_file(ready, destination, options)
    else:
        buffer = io.BytesIO()
        ready.save(buffer, **options)
        destination.put(buffer.getvalue(), fmt.media_type)
        size = buffer.tell()
    return OutputReport(format=fmt, width=ready.width, height=ready.height, bytes=size)


def _write_file(image: Image.Image, path: Path, options: dict[str, Any]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".partial-", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            image.save(stream, **options)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path.stat().st_size
