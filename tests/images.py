"""Real test images: public-domain photos shipped with scikit-image, and comic-like pages
(art, text, blank) drawn with Pillow. Written to disk the way clients would send them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps
from skimage import data

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera")

ASTRONAUT_FACE = (179, 82, 277, 174)
"""Eileen Collins' face in skimage's 512x512 astronaut photo (x0, y0, x1, y1)."""


def photo(name: str) -> Image.Image:
    array = getattr(data, name)()
    image = Image.fromarray(array)
    return image.convert("RGB")


def save_photo(
    directory: Path,
    name: str,
    *,
    size: tuple[int, int] | None = None,
    fmt: str = "JPEG",
    suffix: str = "jpg",
) -> Path:
    image = photo(name)
    if size is not None:
        image = image.resize(size, Image.Resampling.BICUBIC)
    path = directory / f"{name}-{image.width}x{image.height}.{suffix}"
    image.save(path, fmt, quality=90) if fmt == "JPEG" else image.save(path, fmt)
    return path


def text_page(size: tuple[int, int] = (800, 1200)) -> Image.Image:
    """Black lines of 'text' on white paper: an author's note or credits page."""
    page = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(page)
    rng = np.random.default_rng(7)
    y = 60
    while y < size[1] - 60:
        x = 50
        while x < size[0] - 80:
            word = int(rng.integers(20, 70))
            draw.rectangle([x, y, x + word, y + 9], fill="black")
            for stroke in range(x + 3, x + word, 6):
                draw.line([stroke, y, stroke, y + 9], fill="white")
            x += word + 12
        y += 26
    return page


def blank_page(size: tuple[int, int] = (800, 1200)) -> Image.Image:
    return Image.new("RGB", size, (250, 250, 250))


def art_page(name: str, size: tuple[int, int] = (800, 1200)) -> Image.Image:
    """A photo filling a page inside a white margin, like a full-page comic panel."""
    page = Image.new("RGB", size, "white")
    art = ImageOps.fit(photo(name), (size[0] - 40, size[1] - 40))
    page.paste(art, (20, 20))
    return page


def write_pages(directory: Path, pages: list[Image.Image]) -> list[Path]:
    paths = []
    for index, page in enumerate(pages):
        path = directory / f"page-{index:03d}.jpg"
        page.save(path, "JPEG", quality=88)
        paths.append(path)
    return paths


def line_art_page(name: str, size: tuple[int, int] = (800, 1200)) -> Image.Image:
    """A black-and-white manga-style page: ink outlines and screentone dots on paper."""
    grey = ImageOps.fit(photo(name), size).convert("L")
    ink = np.asarray(grey.filter(ImageFilter.FIND_EDGES)) > 40
    rows, cols = np.mgrid[0 : size[1], 0 : size[0]]
    tone = (np.asarray(grey) < 90) & (rows % 6 < 2) & (cols % 6 < 2)
    page = np.where(ink | tone, 0, 255).astype(np.uint8)
    return Image.fromarray(page).convert("RGB")


def sample_volume(volume: Path) -> None:
    """What examples/*.yaml read from a shared volume: photos/<name>-<w>x<h>.jpg and a
    chapter of pages in chapter-1/ (a text page, three art pages, a blank page), readable by
    the runner pods (uid 65532)."""
    photos = volume / "photos"
    photos.mkdir(parents=True)
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        save_photo(photos, name)
    chapter = volume / "chapter-1"
    chapter.mkdir()
    write_pages(
        chapter,
        [text_page(), art_page("coffee"), art_page("astronaut"), blank_page(), art_page("chelsea")],
    )
    for path in [photos, chapter, *photos.iterdir(), *chapter.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
