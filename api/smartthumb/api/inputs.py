"""Turns what a client sent (base64, multipart parts, server paths) into the backend's
InputFile list, refusing obviously bad input with a 4xx before a job exists.

The check is cheap: Pillow reads only the header (format and size), never the pixels; a
truncated or otherwise broken image passes here and fails its job with the runner's message.
"""

from __future__ import annotations

import binascii
import contextlib
import io
import os
import re
import stat
import warnings
from pathlib import Path, PurePath

import pybase64
from fastapi import UploadFile
from PIL import Image, UnidentifiedImageError
from smartthumb.api.errors import ApiError
from smartthumb.api.settings import ApiSettings
from smartthumb.operator.backend import InputFile
from smartthumb.runner.errors import BadInputError
from smartthumb.runner.fetch import check_source
from smartthumb.runner.limits import is_url
from smartthumb.runner.load import SUPPORTED_FORMATS
from smartthumb.runner.netguard import redact

_DATA_URL_PREFIX = re.compile(r"^data:[\w/+.-]*;base64,", re.IGNORECASE)


_WHITESPACE = re.compile(r"[ \t\r\n]+")


def decode_base64(content: str, name: str, max_bytes: int, *, field: str) -> bytes:
    """Strict base64 but for whitespace, which MIME allows (`base64 file` wraps at 76
    columns); a `data:...;base64,` prefix is allowed, as browsers produce it. Errors name
    `name` and the request's `field` that held the text.

    Unwrapped text (what every client library sends) is decoded as it is: scanning a large
    string for whitespace first took more of the API's CPU than anything else it does. pybase64
    (SIMD) decodes the same strict alphabet as the standard library, ~50x faster."""
    text = content.strip()
    prefix = _DATA_URL_PREFIX.match(text)
    if prefix is not None:
        text = text[prefix.end() :]
    unwrapped = False
    if len(text) // 4 * 3 > max_bytes + 2:  # too large, unless whitespace makes it look so
        text, unwrapped = _WHITESPACE.sub("", text), True
        if len(text) // 4 * 3 > max_bytes + 2:
            raise too_large(name, max_bytes)
    try:
        return pybase64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        if not unwrapped:
            with contextlib.suppress(binascii.Error, ValueError):
                return pybase64.b64decode(_WHITESPACE.sub("", text), validate=True)
        raise ApiError(400, "invalid_base64", f"{name}: {field} is not valid base64") from None


def too_large(name: str, max_bytes: int) -> ApiError:
    return ApiError(413, "image_too_large", f"{name}: larger than the limit of {max_bytes} bytes")


def image_format(source: bytes | Path, name: str, limit: int) -> str:
    """The Pillow format name of an image after a header-only check; 4xx if it is none.

    Only the runner's parsers see client bytes: anything else (PSD, ICO, PCX...) is a 400
    here rather than a job that fails later.
    """
    if isinstance(source, bytes) and not source:
        raise ApiError(400, "invalid_image", f"{name}: the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(
                io.BytesIO(source) if isinstance(source, bytes) else source,
                formats=SUPPORTED_FORMATS,
            )
        with opened as image:
            width, height, kind = image.width, image.height, image.format
    except Image.DecompressionBombError:
        raise ApiError(413, "image_too_large", f"{name}: more than {limit} pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        supported = ", ".join(SUPPORTED_FORMATS)
        message = f"{name}: not a readable image of a supported format ({supported})"
        raise ApiError(400, "invalid_image", message) from None
    if width * height > limit:
        raise ApiError(
            413, "image_too_large", f"{name}: {width}x{height} is more than {limit} pixels"
        )
    return kind or "unknown"


def inline_input(name: str, data: bytes, settings: ApiSettings) -> InputFile:
    if len(data) > settings.max_inline_bytes:
        raise too_large(name, settings.max_inline_bytes)
    image_format(data, name, settings.max_pixels)
    return InputFile(name=safe_name(name), data=data)


def safe_name(name: str) -> str:
    """A client's file name kept for display only: no folders, no control characters."""
    base = PurePath(name.replace("\\", "/")).name
    cleaned = "".join(ch for ch in base if ch.isprintable())[:200]
    return cleaned or "image"


def path_input(raw: str, settings: ApiSettings) -> InputFile:
    """A file under the input root; `..`, absolute paths elsewhere and symlink escapes are
    refused. The resolved real path is what the backend reads."""
    if settings.input_root is None:
        raise ApiError(
            400,
            "image_paths_disabled",
            "image_path/image_paths are disabled: the server has no SMARTTHUMB_INPUT_ROOT",
        )
    if "\x00" in raw or ".." in PurePath(raw).parts:
        raise ApiError(400, "path_not_allowed", f"{raw!r}: '..' is not allowed in image paths")
    root = settings.input_root.resolve()
    try:
        resolved = (root / raw).resolve(strict=True)
    except (OSError, RuntimeError):
        raise ApiError(
            400, "input_not_found", f"{raw!r}: no such file under the input root"
        ) from None
    if not resolved.is_relative_to(root):
        raise ApiError(400, "path_not_allowed", f"{raw!r}: outside the input root")
    data = _read_confined(resolved, root, raw, settings.max_upload_bytes)
    image_format(data, raw, settings.max_pixels)
    # Its bytes, not its path: a file swapped for a symlink after this check cannot lead the
    # runner out of the input root, since the runner reads the job's own copy.
    return InputFile(name=resolved.relative_to(root).as_posix(), data=data)


def _read_confined(path: Path, root: Path, raw: str, limit: int) -> bytes:
    """The file's bytes, from what was really opened: no symlink as the last component, and
    the opened file itself (its /proc/self/fd link) inside `root` and regular."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        raise ApiError(
            400, "path_not_allowed", f"{raw!r}: not a file under the input root"
        ) from None
    try:
        info = os.fstat(fd)
        real = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if not real.is_relative_to(root):
            raise ApiError(400, "path_not_allowed", f"{raw!r}: outside the input root")
        if not stat.S_ISREG(info.st_mode):
            raise ApiError(400, "input_not_found", f"{raw!r}: not a regular file")
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as opened:
        data = opened.read(limit + 1)  # st_size is only what it was a moment ago
        if info.st_size > limit or len(data) > limit:
            raise ApiError(413, "payload_too_large", f"{raw!r}: more than {limit} bytes")
        return data


def url_input(url: str, settings: ApiSettings) -> InputFile:
    """An image the runner fetches; refused now when the runner would refuse it (scheme,
    SMARTTHUMB_ALLOWED_SOURCES, a non-public address). Named without its query, which may
    carry a signature."""
    if not is_url(url):
        raise ApiError(400, "source_url_refused", f"{redact(url)}: not an http(s):// URL")
    try:
        check_source(url, settings.limits)
    except BadInputError as error:
        raise ApiError(400, "source_url_refused", str(error)) from None
    return InputFile(name=redact(url), url=url)


def check_count(count: int, settings: ApiSettings) -> None:
    if count == 0:
        raise ApiError(400, "no_images", "no images: send image_files, image_paths or files")
    if count > settings.max_images:
        raise ApiError(
            400, "too_many_images", f"{count} images; at most {settings.max_images} per request"
        )


async def upload_input(upload: UploadFile, settings: ApiSettings) -> InputFile:
    """One multipart part; read only up to the limit, so an oversized part is not buffered."""
    name = upload.filename or "image"
    data = await upload.read(settings.max_inline_bytes + 1)
    return inline_input(name, data, settings)
