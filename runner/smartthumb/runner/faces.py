"""Face detection with CenterFace, run by OpenCV's dnn module.

CenterFace is fully convolutional: it runs on the whole image at once, at any size that is
a multiple of 32, and marks each face's centre on a heat map at a quarter of that size with
the face's size and offset beside it. Trained on WIDER FACE (crowds, small faces), it finds
67 of the crop evaluation's 90 heads at FACE_PIXELS and, unlike the selfie-range BlazeFace it
replaced, takes none of its cat, wheel, cup or rocket photos for a face (tests/test_faces.py).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from smartthumb.runner.geometry import Face

FACE_PIXELS = 110_000
"""The detector sees a copy of at most this many pixels (384x288 for a 4:3 photo): its cost
is proportional to them (about 26 ms on one core here). At this size it finds every head of
a 2400x1200 group photo whose heads are a nineteenth of its width. Wide images get a longer
side for the same cost."""
SCORE_THRESHOLD = 0.5
NMS_THRESHOLD = 0.3
_STRIDE = 32  # the network's input must be a multiple of its coarsest stride
_OUTPUTS = ["537", "538", "539", "540"]  # heat map, log sizes, offsets, landmarks


@lru_cache(maxsize=2)
def _network(path: str) -> cv2.dnn.Net:
    return cv2.dnn.readNetFromONNX(path)


def _input_size(width: int, height: int) -> tuple[int, int]:
    """The largest multiple-of-32 size of the image's aspect within FACE_PIXELS (never larger
    than the image itself)."""
    scale = min(1.0, (FACE_PIXELS / (width * height)) ** 0.5)
    return (
        max(_STRIDE, round(width * scale / _STRIDE) * _STRIDE),
        max(_STRIDE, round(height * scale / _STRIDE) * _STRIDE),
    )


def detect_faces(image: Image.Image, model_path: Path) -> list[Face]:
    """Faces in an image, as normalised boxes (forehead to chin) with confidences."""
    width, height = _input_size(image.width, image.height)
    # Shrunk before any conversion: the decoded image may be megapixels.
    small = image.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=2.0)
    small = small.convert("RGB")
    net = _network(str(model_path))
    net.setInput(cv2.dnn.blobFromImage(np.asarray(small), 1.0, (width, height), (0, 0, 0)))
    heat, log_size, offset, _ = net.forward(_OUTPUTS)
    ys, xs = np.nonzero(heat[0, 0] > SCORE_THRESHOLD)
    if not len(ys):
        return []
    scores = heat[0, 0, ys, xs]
    # Sizes and centres are in input pixels; the heat map's cells are 4 pixels.
    box_h = np.exp(log_size[0, 0, ys, xs]) * 4
    box_w = np.exp(log_size[0, 1, ys, xs]) * 4
    x0 = (xs + offset[0, 1, ys, xs] + 0.5) * 4 - box_w / 2
    y0 = (ys + offset[0, 0, ys, xs] + 0.5) * 4 - box_h / 2
    rects = [[float(v) for v in box] for box in zip(x0, y0, box_w, box_h, strict=True)]
    kept = np.array(cv2.dnn.NMSBoxes(rects, scores.tolist(), SCORE_THRESHOLD, NMS_THRESHOLD))
    faces = [
        Face(
            max(0.0, float(x0[i]) / width),
            max(0.0, float(y0[i]) / height),
            min(1.0, float(x0[i] + box_w[i]) / width),
            min(1.0, float(y0[i] + box_h[i]) / height),
            float(scores[i]),
        )
        for i in kept.reshape(-1)
    ]
    return [face for face in faces if face.x1 > face.x0 and face.y1 > face.y0]
