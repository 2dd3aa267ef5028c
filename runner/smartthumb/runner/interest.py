"""Visual-interest measures that need only numpy, so the fallback runner can use them too."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
from PIL import Image

ANALYSIS_SIDE = 256
"""Longest side of the copy every measure works on: detail beyond it changes no decision."""


def analysis_copy(image: Image.Image) -> np.ndarray:
    """A small float32 RGB copy in [0, 1] (aspect kept), ANALYSIS_SIDE on its longer side."""
    scale = min(1.0, ANALYSIS_SIDE / max(image.size))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    small = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(small.convert("RGB"), dtype=np.float32) / 255.0


def luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def edge_map(gray: np.ndarray) -> np.ndarray:
    """Gradient magnitude (central differences), same shape as the input."""
    gx = np.zeros_like(gray)
    gy = np.zeros_like(gray)
    gx[:, 1:-1] = gray[:, 2:] - gray[:, :-2]
    gy[1:-1, :] = gray[2:, :] - gray[:-2, :]
    return cast(np.ndarray, np.hypot(gx, gy))


def saturation(rgb: np.ndarray) -> np.ndarray:
    # Pairwise maximum over the channels: far faster than a reduction along the last axis.
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    high = np.maximum(np.maximum(red, green), blue)
    low = np.minimum(np.minimum(red, green), blue)
    return np.where(high > 0, (high - low) / np.maximum(high, 1e-6), 0.0).astype(np.float32)


def box_along(values: np.ndarray, radius: int, axis: int) -> np.ndarray:
    """Mean over 2r+1 samples along one axis (edges repeated); keeps the shape."""
    if radius <= 0:
        return values
    size = 2 * radius + 1
    pad = [(radius + 1, radius) if a == axis else (0, 0) for a in range(values.ndim)]
    cumulative = np.moveaxis(
        np.pad(values, pad, mode="edge").cumsum(axis, dtype=np.float64), axis, 0
    )
    mean = (cumulative[size:] - cumulative[:-size]) / size
    return cast(np.ndarray, np.moveaxis(mean, 0, axis).astype(np.float32))


def box_blur(values: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a (2r+1)^2 window (separable); keeps the shape."""
    return box_along(box_along(values, radius, 0), radius, 1)


def zigzag(values: np.ndarray, axis: int) -> np.ndarray:
    """How far each sample is from the mean of its two neighbours along `axis` (0 at the
    ends): large where a profile alternates, as across lines of text."""
    moved = np.moveaxis(values, axis, 0)
    out = np.zeros_like(moved)
    out[1:-1] = np.abs(moved[1:-1] - (moved[:-2] + moved[2:]) / 2)
    return np.moveaxis(out, 0, axis)


def normalise(values: np.ndarray) -> np.ndarray:
    peak = float(values.max())
    return values / peak if peak > 1e-9 else np.zeros_like(values)


def texture_contrast(rgb: np.ndarray) -> np.ndarray:
    """How far each region's density of detail is from the image's typical density: a
    plain object on grass or gravel stands out, though the texture around it has as many
    edges as it has."""
    edges = (edge_map(luminance(rgb)) > 0.08).astype(np.float32)
    density = box_blur(edges, max(2, min(rgb.shape[:2]) // 16))
    return normalise(np.abs(density - float(np.median(density))))


def edge_interest(rgb: np.ndarray) -> np.ndarray:
    """Detail plus colour: what smartcrop-style croppers call 'interesting'."""
    edges = normalise(edge_map(luminance(rgb)))
    blur = max(1, min(rgb.shape[:2]) // 40)
    return normalise(box_blur(0.7 * edges + 0.3 * saturation(rgb), blur))


@dataclass(frozen=True)
class PageScore:
    """How good a page is as a panel, with the measures that produced the score."""

    score: float
    contrast: float
    edge_density: float
    colourfulness: float
    blank: bool
    text_heavy: bool
    edge_page: bool


BLANK_CONTRAST = 0.02
EDGE_PAGE_PENALTY = 0.6
TEXT_PENALTY = 0.1
TEXT_EDGE_DENSITY = 0.2
"""Photos and drawings stay below ~0.12 edge pixels per pixel at 256 px; text pages do not."""
TEXT_STRIPES = 2.0
"""Lines of text make the ink's profile across them 3x or more as jagged as along them at
256 px, even where the letters blur to grey; drawings and photos stay near 1."""
TEXT_LINES_REACH = 25
"""The local measure of lines looks 1/25 of the image's longer side around each point:
a few lines of text, less than a figure."""


def stripes(gray: np.ndarray) -> float:
    """How much more the ink's row profile zigzags than its column profile, or the reverse
    (vertical text): lines of text are stripes, drawings are not."""
    ink = 1.0 - gray
    jagged = [
        float(zigzag(profile, 0).mean()) / (float(profile.mean()) + 1e-6)
        for profile in (ink.mean(axis=1), ink.mean(axis=0))
    ]
    low, high = sorted(jagged)
    return high / max(low, 1e-6)


def is_text_page(rgb: np.ndarray) -> bool:
    """Colourless strokes on paper, in lines: far more edges than any drawing or photo has
    at this scale, or stripes where small letters blur together."""
    gray = luminance(rgb)
    return _text_heavy(gray, _edge_density(gray), float(saturation(rgb).mean()))


def _edge_density(gray: np.ndarray) -> float:
    return float((edge_map(gray) > 0.15).mean())


def _text_heavy(gray: np.ndarray, edge_density: float, colourfulness: float) -> bool:
    """is_text_page from the measures score_page has already taken."""
    paper = float((gray > 0.88).mean())
    return (
        (edge_density > TEXT_EDGE_DENSITY or stripes(gray) > TEXT_STRIPES)
        and colourfulness < 0.06
        and paper > 0.3
    )


def text_lines(rgb: np.ndarray) -> np.ndarray:
    """Where the image is lines of text (0..1): the same stripes measure, over each point's
    neighbourhood. A figure among the lines stays near 0."""
    ink = 1.0 - luminance(rgb)
    reach = max(2, max(ink.shape) // TEXT_LINES_REACH)
    across = box_blur(zigzag(box_along(ink, reach, 1), 0), reach)
    along = box_blur(zigzag(box_along(ink, reach, 0), 1), reach)
    floor = 0.01 * float(max(across.mean(), along.mean())) + 1e-6
    ratio = np.maximum((across + floor) / (along + floor), (along + floor) / (across + floor))
    return np.clip((ratio - 1.5) / 1.5, 0, 1).astype(np.float32)


def score_page(rgb: np.ndarray, index: int, count: int, skip_edges: int) -> PageScore:
    """Score a page for the pair thumbnail: lively art wins; blank and text pages lose.

    Text pages (credits, author notes, a page of prose with a figure) lose: see
    is_text_page.
    """
    gray = luminance(rgb)
    contrast = float(gray.std())
    edge_density = _edge_density(gray)
    colourfulness = float(saturation(rgb).mean())
    midtones = float(((gray > 0.2) & (gray < 0.8)).mean())
    blank = contrast < BLANK_CONTRAST
    text_heavy = _text_heavy(gray, edge_density, colourfulness)
    edge_page = index < skip_edges or index >= count - skip_edges
    score = (
        0.35 * min(1.0, contrast / 0.25)
        + 0.30 * min(1.0, edge_density / 0.12)
        + 0.25 * min(1.0, colourfulness / 0.3)
        + 0.10 * midtones
    )
    if blank:
        score *= 0.02
    if text_heavy:
        score *= TEXT_PENALTY
    if edge_page:
        score *= EDGE_PAGE_PENALTY
    return PageScore(
        score=round(score, 4),
        contrast=contrast,
        edge_density=edge_density,
        colourfulness=colourfulness,
        blank=blank,
        text_heavy=text_heavy,
        edge_page=edge_page,
    )
