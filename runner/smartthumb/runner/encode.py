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
    # speed 8: ~3x faster than the default for a few per cent more bytes.
    return {"format": "AVIF", "quality": quality, "speed": 8}


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
