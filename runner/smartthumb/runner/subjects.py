"""Subject detectors in order of preference: a user-supplied YOLO model (optional extra,
THUMBNAIL_YOLO_MODEL), then CenterFace faces from the installed model directory."""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image
from smartthumb.runner.errors import RunnerError
from smartthumb.runner.geometry import Face
from smartthumb.runner.models import face_model_path

YOLO_ENV = "THUMBNAIL_YOLO_MODEL"
_PERSON_CLASS = 0
_YOLO_CONFIDENCE = 0.35


@lru_cache(maxsize=1)
def _yolo(path: str) -> Any:
    try:
        from ultralytics import YOLO
    except ImportError as error:
        raise RunnerError(
            f"{YOLO_ENV} is set but the 'yolo' extra is not installed "
            f"(pip install 'smartthumb-runner[yolo]'): {error}"
        ) from None
    return YOLO(path)


def yolo_people(rgb8: np.ndarray, path: str) -> list[Face]:
    """Person boxes (and, from a custom model, any box) from an ultralytics YOLO model."""
    model = _yolo(path)
    height, width = rgb8.shape[:2]
    # ultralytics takes numpy arrays as BGR.
    results = model.predict(rgb8[:, :, ::-1], verbose=False, conf=_YOLO_CONFIDENCE)
    people = []
    for result in results:
        boxes = result.boxes
        for (x0, y0, x1, y1), cls, conf in zip(
            boxes.xyxy.tolist(), boxes.cls.tolist(), boxes.conf.tolist(), strict=True
        ):
            if len(result.names) > 1 and int(cls) != _PERSON_CLASS:
                continue
            box = (x0 / width, y0 / height, x1 / width, y1 / height)
            people.append(Face(*box, confidence=float(conf), person=True))
    return people


def detect(rgb8: np.ndarray, image: Image.Image) -> tuple[list[Face], list[str]]:
    """All subject boxes found, and the names of the detectors that found them: YOLO looks at
    the small analysis copy `rgb8`, the face detector at `image` (the decoded image, which
    it shrinks to its own size: small faces need more pixels than the analysis copy has)."""
    found: list[Face] = []
    names: list[str] = []
    yolo_path = os.environ.get(YOLO_ENV)
    if yolo_path:
        people = yolo_people(rgb8, yolo_path)
        if people:
            found += people
            names.append("yolo")
    model = face_model_path()
    if model is not None:
        from smartthumb.runner.faces import detect_faces

        faces = detect_faces(image, model)
        if faces:
            found += faces
            names.append("face")
    return found, names
