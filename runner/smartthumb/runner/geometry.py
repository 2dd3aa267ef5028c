"""Pure geometry: output sizes, panel layout and the best crop window over an interest map."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FACE_WEIGHT = 0.6
"""A whole face in frame is worth this share of the image's total interest."""
CUT_FACE_PENALTY = 0.3
"""Cutting a face in half costs this share: a crop through someone's head looks broken."""
SUBJECT_THRESHOLD = 0.4
"""Interest above this share of the peak is the subject: what a crop must keep whole."""
INTEREST_SHARE = 0.4
"""The rest of a window's score is the share of the subject it holds."""
HEAD_SIDES = 0.3
"""A head is wider than the face a detector boxes: ears and hair, on each side."""
HEAD_TOP = 0.8
"""The crown is this share of the face box's height above it (hair, a hat)."""
CHIN = 0.15
"""The chin and jaw are this share of the face box's height below it."""
FACE_AREA_TOLERANCE = 0.01
"""Heads first: the windows that hold within this share of the most face area compete."""
WHOLE_SUBJECT = 0.2
"""Bonus, per share of the subjects' extent, for a subject held whole."""
CUT_SUBJECT = 0.2
"""Cost, per share of the subjects' extent, of cutting a subject."""
RUN_FLOOR = 0.05
"""Subject-profile values below this share of its peak separate two subjects."""
CENTRE_BIAS = 0.04
"""Between equally interesting windows, prefer the one centred on the subjects (their centre
of mass along the sliding axis): a subject is framed, not pushed to an edge."""
STEPS_PER_SAMPLE = 4
"""The window slides in quarters of an interest-map sample, so that its start and length are
the crop's to within 0.1 % of the image side (a whole sample is 0.4 % at 256 px: enough to
shave the edge of a face the crop was meant to hold)."""


@dataclass(frozen=True)
class Window:
    """A rectangle in normalised image coordinates (0..1 on both axes)."""

    x: float
    y: float
    width: float
    height: float

    def to_pixels(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) in pixels, clamped to the image."""
        left = max(0, min(width - 1, round(self.x * width)))
        top = max(0, min(height - 1, round(self.y * height)))
        right = max(left + 1, min(width, round((self.x + self.width) * width)))
        bottom = max(top + 1, min(height, round((self.y + self.height) * height)))
        return left, top, right, bottom

    def overlap(self, other: Window) -> float:
        """Intersection over the smaller area."""
        ix = max(0.0, min(self.x + self.width, other.x + other.width) - max(self.x, other.x))
        iy = max(0.0, min(self.y + self.height, other.y + other.height) - max(self.y, other.y))
        smaller = min(self.width * self.height, other.width * other.height)
        return ix * iy / smaller if smaller > 0 else 0.0


FULL = Window(0.0, 0.0, 1.0, 1.0)


@dataclass(frozen=True)
class Face:
    """A detected face (or person) box in normalised coordinates, with its confidence."""

    x0: float
    y0: float
    x1: float
    y1: float
    confidence: float = 1.0
    person: bool = False
    """A whole person (YOLO), not a face: its box already holds the head."""

    def with_hair_and_chin(self) -> Face:
        """Detectors box the inner face; a good crop keeps the hair and chin too. A person
        box is kept as it is: grown like a face it would reach past the feet."""
        if self.person:
            return self
        width, height = self.x1 - self.x0, self.y1 - self.y0
        return Face(
            max(0.0, self.x0 - HEAD_SIDES * width),
            max(0.0, self.y0 - HEAD_TOP * height),
            min(1.0, self.x1 + HEAD_SIDES * width),
            min(1.0, self.y1 + CHIN * height),
            self.confidence,
        )


def fit_size(
    src_w: int, src_h: int, box_w: int | None, box_h: int | None, *, upscale: bool
) -> tuple[int, int]:
    """Largest size inside the box with the source's aspect; never larger unless asked."""
    scales = [limit / side for limit, side in ((box_w, src_w), (box_h, src_h)) if limit]
    scale = min(scales) if scales else 1.0
    if not upscale:
        scale = min(scale, 1.0)
    return max(1, round(src_w * scale)), max(1, round(src_h * scale))


def shrink_to_source(
    target_w: int, target_h: int, src_w: int, src_h: int, *, upscale: bool
) -> tuple[int, int]:
    """The crop's output size: the target, or smaller with the same aspect if the region is."""
    if upscale or (src_w >= target_w and src_h >= target_h):
        return target_w, target_h
    scale = min(src_w / target_w, src_h / target_h)
    return max(1, round(target_w * scale)), max(1, round(target_h * scale))


def panel_widths(canvas_width: int, gap: int) -> tuple[int, int]:
    """Two panels that exactly fill the canvas around the gap (no stray 1-px column)."""
    usable = canvas_width - gap
    left = (usable + 1) // 2
    return left, usable - left


def best_window(
    interest: np.ndarray,
    aspect: float,
    faces: list[Face] = (),  # type: ignore[assignment]
    *,
    avoid: Window | None = None,
) -> Window:
    """The largest window of `aspect` (w/h) over the image that holds the subjects best.

    The subject is the interest above SUBJECT_THRESHOLD of its peak: a window scores the
    share of it it holds (and, less, of all interest), a bonus for each subject held whole
    and a cost for each one cut that it could have held whole, and the same for faces (grown
    to whole heads; any cut one costs); only the windows holding the most face area compete.
    The window spans the image fully along one axis and slides along the other, so the search
    is one-dimensional and exact. `avoid` steers away from a window already used (a single
    page used for both panels gets two different views).
    """
    map_h, map_w = interest.shape
    image_aspect = map_w / map_h
    slide_horizontally = aspect < image_aspect
    axis = 0 if slide_horizontally else 1
    # Window width (or height) as a share of the image width (or height).
    length = aspect / image_aspect if slide_horizontally else image_aspect / aspect
    peak = float(interest.max()) or 1.0
    threshold = SUBJECT_THRESHOLD * peak
    mask = np.clip((interest - threshold) / (peak - threshold), 0, None)
    profile = np.repeat(interest.sum(axis=axis), STEPS_PER_SAMPLE)
    mask_profile = np.repeat(mask.sum(axis=axis), STEPS_PER_SAMPLE)
    samples = profile.size
    span = max(1, min(samples, round(length * samples)))
    sums = _window_sums(profile, span)
    starts = np.arange(sums.size) / samples
    scores = INTEREST_SHARE * sums / (float(profile.sum()) or 1.0)
    scores = scores + (1 - INTEREST_SHARE) * _window_sums(mask_profile, span) / (
        float(mask_profile.sum()) or 1.0
    )
    # Whole subjects first: a window that holds a subject (a run of the subject profile)
    # whole beats one that holds as much interest in pieces of two.
    runs = _runs(mask_profile)
    for lo, hi, weight in runs:
        share, cut = _held(starts, length, lo, hi)
        if hi - lo > length:  # cut by every window over it: no fault of any one
            cut = np.zeros_like(cut)
        scores = scores + weight * (WHOLE_SUBJECT * (share >= 0.98) - CUT_SUBJECT * cut)
    # The centre bias is a share of the best score without faces: a face's bonus must not
    # make it stronger.
    best_plain = max(float(scores.max()), 0.0)
    face_area = np.zeros(starts.size)
    for face in faces:
        head = face.with_hair_and_chin()
        lo, hi = (head.x0, head.x1) if slide_horizontally else (head.y0, head.y1)
        share, cut = _held(starts, length, lo, hi)
        scores = scores + head.confidence * (FACE_WEIGHT * share - CUT_FACE_PENALTY * cut)
        face_area += share * (head.x1 - head.x0) * (head.y1 - head.y0)
    if sums.size > 1:
        middle = _centre_of(mask_profile)
        off_centre = (starts + length / 2 - middle) / 0.5
        scores = scores - CENTRE_BIAS * np.abs(off_centre) * best_plain
    if avoid is not None:
        overlaps = _overlaps_with(avoid, starts, length, slide_horizontally)
        scores = scores - 2.0 * np.clip(overlaps - 0.5, 0, None) * max(float(scores.max()), 0.0)
    # Heads first: only the windows that hold the most face area compete, so no salient
    # background outweighs a face (and of two groups of heads, the larger is kept).
    most = float(face_area.max())
    scores = np.where(face_area >= (1 - FACE_AREA_TOLERANCE) * most, scores, -np.inf)
    start = float(starts[int(np.argmax(scores))])
    return _window(start, length, slide_horizontally)


def _overlaps_with(
    avoid: Window, starts: np.ndarray, length: float, slide_horizontally: bool
) -> np.ndarray:
    """Window.overlap(avoid) of the window at each start (as _window places it)."""
    length = min(1.0, length)
    starts = np.clip(starts, 0.0, 1.0 - length)
    if slide_horizontally:
        lo, extent, across = avoid.x, avoid.width, (avoid.y, avoid.height)
    else:
        lo, extent, across = avoid.y, avoid.height, (avoid.x, avoid.width)
    along = np.clip(np.minimum(starts + length, lo + extent) - np.maximum(starts, lo), 0, None)
    span_across = max(0.0, min(1.0, across[0] + across[1]) - max(0.0, across[0]))
    smaller = min(length, avoid.width * avoid.height)
    overlaps: np.ndarray = along * span_across / smaller if smaller > 0 else np.zeros(starts.size)
    return overlaps


def _held(starts: np.ndarray, length: float, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """For each window start: the share of [lo, hi] inside the window, and whether the
    window cuts it (holds some of it but not all)."""
    inside = np.clip(np.minimum(starts + length, hi) - np.maximum(starts, lo), 0, None)
    share = inside / max(hi - lo, 1e-6)
    return share, (share > 0.02) & (share < 0.98)


def _runs(profile: np.ndarray) -> list[tuple[float, float, float]]:
    """The subject profile's runs (subjects along the sliding axis): (start, end) in 0..1,
    and the run's share of the subjects' extent. By extent, not by interest: between two
    subjects that cannot both fit, the larger one is the one to keep."""
    if float(profile.max(initial=0.0)) <= 0:
        return []
    present = np.concatenate([[False], profile > RUN_FLOOR * float(profile.max()), [False]])
    edges = np.flatnonzero(present[1:] != present[:-1])
    spans = list(zip(edges[::2], edges[1::2], strict=True))
    extent = float(sum(end - begin for begin, end in spans))
    return [
        (begin / profile.size, end / profile.size, (end - begin) / extent) for begin, end in spans
    ]


def _centre_of(profile: np.ndarray) -> float:
    """The profile's centre of mass in 0..1 (the middle where it is empty)."""
    total = float(profile.sum())
    if total <= 0:
        return 0.5
    return float((np.arange(profile.size) + 0.5) @ profile) / total / profile.size


def _window_sums(profile: np.ndarray, span: int) -> np.ndarray:
    """The profile's sum over every window of `span` samples."""
    cumulative: np.ndarray = np.concatenate([[0.0], np.cumsum(profile, dtype=np.float64)])
    sums: np.ndarray = cumulative[span:] - cumulative[:-span]
    return sums


def _window(start: float, length: float, slide_horizontally: bool) -> Window:
    length = min(1.0, length)
    start = min(max(0.0, start), 1.0 - length)
    if slide_horizontally:
        return Window(start, 0.0, length, 1.0)
    return Window(0.0, start, 1.0, length)
