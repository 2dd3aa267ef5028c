"""Open source images safely and decode them no larger than the output needs."""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from PIL import Image, ImageOps, UnidentifiedImageError
from smartthumb.runner.errors import BadInputError
from smartthumb.runner.limits import Limits

SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "AVIF", "GIF", "BMP", "TIFF")
"""Only these parsers ever see client bytes (multi-picture JPEGs open as JPEG)."""

_ROTATED_ORIENTATIONS = {5, 6, 7, 8}
_EXIF_ORIENTATION = 0x0112

# We enforce our own pixel limit before decoding; Pillow's warning would only be noise.
warnings.simplefilter("ignore", Image.DecompressionBombWarning)


class ByteSource(Protocol):
    """An input that is not a file, held in memory (fetch.RemoteImage: a URL)."""

    @property
    def name(self) -> str:
        """How messages name it (never a URL's query)."""
        ...

    def read(self) -> bytes:
        """The encoded image; fetched on the first call."""
        ...

    def release(self) -> None:
        """Drop the bytes; a later read fetches them again."""
        ...


ImageInput = Path | ByteSource


@dataclass
class Source:
    """An opened (header-only) image and its size after EXIF rotation."""

    name: str
    image: Image.Image
    width: int
    height: int
    rotated: bool

    def close(self) -> None:
        self.image.close()


def open_source(item: ImageInput, limits: Limits) -> Source:
    """Read only the header: format, size, orientation. Refuse what we will not decode."""
    name = item.name
    try:
        data = item if isinstance(item, Path) else io.BytesIO(item.read())
        image = Image.open(data, formats=SUPPORTED_FORMATS)
    except FileNotFoundError:
        raise BadInputError(f"{name}: file not found") from None
    except IsADirectoryError:
        raise BadInputError(f"{name}: is a directory, not an image") from None
    except UnidentifiedImageError:
        raise BadInputError(
            f"{name}: not a supported image (expected one of: {', '.join(_public_formats())})"
        ) from None
    except Image.DecompressionBombError as error:
        raise BadInputError(f"{name}: refused as a decompression bomb ({error})") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise BadInputError(f"{name}: unreadable image header ({error})") from None
    width, height = image.size
    if width <= 0 or height <= 0:
        image.close()
        raise BadInputError(f"{name}: image has no pixels")
    pixels = width * height
    if pixels > limits.max_pixels:
        image.close()
        raise BadInputError(
            f"{name}: {width}x{height} is {pixels / 1e6:.1f} MP, above the limit of "
            f"{limits.max_pixels / 1e6:.1f} MP (decompression bomb protection)"
        )
    rotated = _orientation(image) in _ROTATED_ORIENTATIONS
    if rotated:
        width, height = height, width
    return Source(name=name, image=image, width=width, height=height, rotated=rotated)


def _public_formats() -> list[str]:
    return ["jpeg", "png", "webp", "avif", "gif", "bmp", "tiff"]


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # noqa: BLE001 - a broken EXIF block must not reject a good image
        return 1


def decode(source: Source, scale: float, *, keep_alpha: bool = False) -> Image.Image:
    """Decode at no less than `scale` of the (rotated) source size, then apply EXIF rotation.

    For JPEG, `draft()` decodes straight from the DCT at 1/2, 1/4 or 1/8 scale, so a 12 MP
    page needed at 600 px is never held at full size. Returns RGB (or RGBA if asked and
    the source has transparency).
    """
    image = source.image
    scale = min(1.0, max(scale, 1e-6))
    want_w = max(1, math.ceil(source.width * scale))
    want_h = max(1, math.ceil(source.height * scale))
    if source.rotated:
        want_w, want_h = want_h, want_w
    try:
        if image.format in ("JPEG", "MPO") and scale < 1.0:
            image.draft("RGB", (want_w, want_h))
        image.load()
        decoded = (
            ImageOps.exif_transpose(image) if source.rotated or _has_orientation(image) else image
        )
        return to_rgb(decoded, keep_alpha=keep_alpha)
    except MemoryError:
        raise
    except Image.DecompressionBombError as error:
        raise BadInputError(f"{source.name}: refused as a decompression bomb ({error})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise BadInputError(f"{source.name}: corrupt or truncated image ({error})") from None


def _has_orientation(image: Image.Image) -> bool:
    return _orientation(image) not in (0, 1)


def to_rgb(image: Image.Image, *, keep_alpha: bool) -> Image.Image:
    """RGB (or RGBA when asked and present); transparency flattened on white, 16-bit scaled."""
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        if keep_alpha:
            return rgba
        # Transparent areas become white, as a browser shows them on a page.
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale to 8 bits rather than clipping everything to white.
        return image.point(lambda value: value / 256).convert("RGB")
    return image.convert("RGB")
