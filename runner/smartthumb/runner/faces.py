"""Face detection with MediaPipe's BlazeFace short-range model, run by OpenCV's dnn module."""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from smartthumb.runner.geometry import Face

INPUT_SIDE = 128
SCORE_THRESHOLD = 0.6
NMS_THRESHOLD = 0.3
_CLIP = 80.0  # exp(-80) still fits in float32


@lru_cache(maxsize=1)
def _anchors() -> np.ndarray:
    """BlazeFace's SSD anchors: 2 per cell on the 16x16 grid, 6 per cell on the 8x8 grid."""
    centres = []
    for grid, per_cell in ((16, 2), (8, 6)):
        ys, xs = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
        cells = np.stack([(xs.ravel() + 0.5) / grid, (ys.ravel() + 0.5) / grid], axis=1)
        centres.append(np.repeat(cells, per_cell, axis=0))
    return np.concatenate(centres).astype(np.float32)  # (896, 2)


@lru_cache(maxsize=2)
def _network(path: str) -> cv2.dnn.Net:
    # The classic engine returns both output tensors; OpenCV 5's new engine returns one.
    engine = getattr(cv2.dnn, "ENGINE_CLASSIC", None)
    if engine is None:
        return cv2.dnn.readNetFromTFLite(path)
    return cv2.dnn.readNetFromTFLite(path, engine=engine)


def _detect_square(net: cv2.dnn.Net, square_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (x0, y0, x1, y1 in 0..1 of the square) and scores for one 128x128 input."""
    blob = cv2.dnn.blobFromImage(
        square_rgb, 1 / 127.5, (INPUT_SIDE, INPUT_SIDE), (127.5, 127.5, 127.5), swapRB=False
    )
    net.setInput(blob)
    regressors, classificators = net.forward(["regressors", "classificators"])
    raw = regressors.reshape(-1, 16)
    logits = np.clip(classificators.reshape(-1), -_CLIP, _CLIP)
    scores = 1.0 / (1.0 + np.exp(-logits))
    keep = scores >= SCORE_THRESHOLD
    if not keep.any():
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
    anchors = _anchors()[keep]
    raw = raw[keep] / INPUT_SIDE
    cx, cy = raw[:, 0] + anchors[:, 0], raw[:, 1] + anchors[:, 1]
    half_w, half_h = raw[:, 2] / 2, raw[:, 3] / 2
    boxes = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1)
    return boxes, scores[keep]


def _squares(width: int, height: int) -> list[tuple[int, int, int]]:
    """Square tiles (x, y, side) covering the image: the whole image letterboxed when it is
    nearly square, else overlapping squares along the long axis, so that faces in a wide
    group photo stay large enough (and the letterboxed whole would add nothing)."""
    side = min(width, height)
    long_side = max(width, height)
    if long_side <= side * 1.2:
        return [(0, 0, long_side)]
    offsets = (
        round(step) for step in np.linspace(0, long_side - side, math.ceil(long_side / side))
    )
    return [(offset, 0, side) if width > height else (0, offset, side) for offset in offsets]


def detect_faces(rgb: np.ndarray, model_path: Path) -> list[Face]:
    """Faces in an RGB uint8 image, as normalised boxes with confidences."""
    net = _network(str(model_path))
    height, width = rgb.shape[:2]
    all_boxes: list[np.ndarray] = []
    all_scores: list[np.ndarray] = []
    for x, y, side in _squares(width, height):
        tile = np.zeros((side, side, 3), np.uint8)
        crop = rgb[y : y + side, x : x + side]
        tile[: crop.shape[0], : crop.shape[1]] = crop
        boxes, scores = _detect_square(
            net, cv2.resize(tile, (INPUT_SIDE, INPUT_SIDE), interpolation=cv2.INTER_AREA)
        )
        if len(scores):
            boxes = boxes * side + np.array([x, y, x, y], np.float32)
            all_boxes.append(boxes)
            all_scores.append(scores)
    if not all_boxes:
        return []
    boxes = np.concatenate(all_boxes)
    scores = np.concatenate(all_scores)
    rects = [[float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])] for b in boxes]
    kept = cv2.dnn.NMSBoxes(rects, scores.tolist(), SCORE_THRESHOLD, NMS_THRESHOLD)
    faces = []
    for index in np.array(kept).reshape(-1):
        x0, y0, x1, y1 = boxes[index]
        faces.append(
            Face(
                max(0.0, x0 / width),
                max(0.0, y0 / height),
                min(1.0, x1 / width),
                min(1.0, y1 / height),
                float(scores[index]),
            )
        )
    return [face for face in faces if face.x1 > face.x0 and face.y1 > face.y0]
