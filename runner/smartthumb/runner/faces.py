"""Face detection with CenterFace, run by OpenCV's dnn module.

CenterFace is fully convolutional: it runs on the whole image at once, at any size that is
a multiple of 32, and marks each face's centre on a heat map at a quarter of that size with
the face's size and offset beside it. Trained on WIDER FACE (crowds, small faces), it finds
67 of the crop evaluation's 90 heads in one look at FACE_PIXELS, 84 with the closer looks at
the weak peaks of that look, and, unlike the selfie-range BlazeFace it replaced, takes none of
its cat, wheel, cup or rocket photos for a face (tests/test_faces.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from smartthumb.runner.geometry import Face

FACE_PIXELS = 110_000
"""The detector sees a copy of at most this many pixels (384x288 for a 4:3 photo): its cost
is proportional to them (17-26 ms on one core here, from a 2000x1500 decode). At this size
it finds every head of a 2400x1200 group photo whose heads are a nineteenth of its width.
Wide images get a longer side for the same cost."""
SCORE_THRESHOLD = 0.5
NMS_THRESHOLD = 0.3
HINT_THRESHOLD = 0.04
"""A heat-map peak above this but below SCORE_THRESHOLD is a hint: a face too small for the
whole-image copy often shows as one, and a closer look at it (below) decides."""
CLOSER_LOOKS = 3
"""At most this many hints, the strongest, get a closer look: together they cost at most about
as much as the first look (on the evaluation: none for most images, about half of it or less for
nine in ten)."""
SMALL_HINT = 32
"""Only hints at most this many pixels across in the whole-image copy get one: a larger face
is seen well enough there, and a closer look at it would cost as much as the first."""
ZOOM = 3.0
"""A closer look sees the hint's neighbourhood at this many times the whole-image copy's
scale: a face 15 px wide there is 45 px wide here, which CenterFace finds."""
CONTEXT = 2.0
"""The neighbourhood looked at is this many times the hinted face's size (at least 48 px of
the whole-image copy): the face with room around it. A closer look costs at most a third of
the first (64 px of the copy, 192 px at ZOOM)."""
_STRIDE = 32  # the network's input must be a multiple of its coarsest stride
_OUTPUTS = ["537", "538", "539", "540"]  # heat map, log sizes, offsets, landmarks


@lru_cache(maxsize=2)
def _network(path: str) -> cv2.dnn.Net:
    return cv2.dnn.readNetFromONNX(path)


def _input_size(width: int, height: int) -> tuple[int, int]:
    """The largest multiple-of-32 size of the image's aspect within FACE_PIXELS (never larger
    than the image itself)."""
    scale = min(1.0, (FACE_PIXELS / (width * height)) ** 0.5)
    return _multiples(width * scale, height * scale)


def _multiples(width: float, height: float) -> tuple[int, int]:
    return (
        max(_STRIDE, round(width / _STRIDE) * _STRIDE),
        max(_STRIDE, round(height / _STRIDE) * _STRIDE),
    )


@dataclass(frozen=True)
class _Box:
    """A heat-map peak as a box in the network input's pixels."""

    x: float
    y: float
    width: float
    height: float
    score: float


def _look(image: Image.Image, size: tuple[int, int], net: cv2.dnn.Net) -> list[_Box]:
    """Every peak above HINT_THRESHOLD of the network's heat map on `image` shrunk (or grown)
    to `size`, strongest first, overlapping ones merged (non-maximum suppression)."""
    # Resized before any conversion: the decoded image may be megapixels.
    small = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0).convert("RGB")
    net.setInput(cv2.dnn.blobFromImage(np.asarray(small), 1.0, size, (0, 0, 0)))
    heat, log_size, offset, _ = net.forward(_OUTPUTS)
    ys, xs = np.nonzero(heat[0, 0] > HINT_THRESHOLD)
    if not len(ys):
        return []
    scores = heat[0, 0, ys, xs]
    # Sizes and centres are in input pixels; the heat map's cells are 4 pixels.
    box_h = np.exp(log_size[0, 0, ys, xs]) * 4
    box_w = np.exp(log_size[0, 1, ys, xs]) * 4
    x0 = (xs + offset[0, 1, ys, xs] + 0.5) * 4 - box_w / 2
    y0 = (ys + offset[0, 0, ys, xs] + 0.5) * 4 - box_h / 2
    boxes = [
        _Box(float(x), float(y), float(w), float(h), float(score))
        for x, y, w, h, score in zip(x0, y0, box_w, box_h, scores, strict=True)
    ]
    rects = [[box.x, box.y, box.width, box.height] for box in boxes]
    kept = cv2.dnn.NMSBoxes(rects, scores.tolist(), HINT_THRESHOLD, NMS_THRESHOLD)
    return sorted((boxes[i] for i in np.array(kept).reshape(-1)), key=lambda box: -box.score)


def _face(box: _Box, scale: float, left: float, top: float, width: int, height: int) -> Face:
    """A box from a look at `scale` of the region at (left, top) as a Face in the image of
    (width, height), clamped to it."""
    return Face(
        max(0.0, (left + box.x / scale) / width),
        max(0.0, (top + box.y / scale) / height),
        min(1.0, (left + (box.x + box.width) / scale) / width),
        min(1.0, (top + (box.y + box.height) / scale) / height),
        box.score,
    )


def _overlap(a: Face, b: Face) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def detect_faces(image: Image.Image, model_path: Path) -> list[Face]:
    """Faces in an image, as normalised boxes (forehead to chin) with confidences.

    One look at the whole image at FACE_PIXELS, then a closer look at the neighbourhood of
    each of the strongest hints (CLOSER_LOOKS), whose faces are kept where they overlap no
    face already found."""
    net = _network(str(model_path))
    width, height = image.size
    size = _input_size(width, height)
    scale = size[0] / width
    peaks = _look(image, size, net)
    faces = [_face(box, scale, 0, 0, width, height) for box in peaks if box.score > SCORE_THRESHOLD]
    hints = [
        box
        for box in peaks
        if box.score <= SCORE_THRESHOLD and max(box.width, box.height) <= SMALL_HINT
    ][:CLOSER_LOOKS]
    for hint in hints:
        side = max(CONTEXT * max(hint.width, hint.height), 48) / scale
        centre_x, centre_y = (hint.x + hint.width / 2) / scale, (hint.y + hint.height / 2) / scale
        left, top = max(0, round(centre_x - side / 2)), max(0, round(centre_y - side / 2))
        right = min(width, round(centre_x + side / 2))
        bottom = min(height, round(centre_y + side / 2))
        region = image.crop((left, top, right, bottom))
        zoomed = _multiples(region.width * scale * ZOOM, region.height * scale * ZOOM)
        closer = zoomed[0] / region.width
        for box in _look(region, zoomed, net):
            face = _face(box, closer, left, top, width, height)
            if box.score > SCORE_THRESHOLD and not any(_overlap(face, other) for other in faces):
                faces.append(face)
    return [face for face in faces if face.x1 > face.x0 and face.y1 > face.y0]
