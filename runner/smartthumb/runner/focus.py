"""Where the subject is: an interest map plus face/person boxes, from the best detector
available (YOLO if the operator supplied weights, CenterFace faces, OpenCV saliency), with
a numpy-only edge measure for the light fallback runner."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from smartthumb.runner.geometry import Face
from smartthumb.runner.interest import (
    box_blur,
    edge_interest,
    normalise,
    text_lines,
    texture_contrast,
)

TEXTURE_SHARE = 0.1
"""Share of the interest map given to texture contrast (saliency and edges have the rest)."""
TEXT_DAMPING = 0.8
"""On a page of text, lines of text keep this little of their interest: the figure among
them is the subject."""


@dataclass
class Focus:
    interest: np.ndarray
    faces: list[Face] = field(default_factory=list)
    detector: str = "edges"


def without_text(rgb: np.ndarray, interest: np.ndarray, text_page: bool) -> np.ndarray:
    """On a page of text (`text_page`: what `is_text_page(rgb)` says, taken once by the
    caller), the lines of text lose most of their interest."""
    if not text_page:
        return interest
    return normalise(interest * (1 - TEXT_DAMPING * text_lines(rgb)))


def light_focus(rgb: np.ndarray, text_page: bool) -> Focus:
    """No OpenCV, no models: edges and colour only (the fallback runner's view)."""
    return Focus(interest=without_text(rgb, edge_interest(rgb), text_page), detector="edges")


def smart_focus(rgb: np.ndarray, text_page: bool, image: Image.Image) -> Focus:
    """Saliency plus detected subjects; each detector that found something is named. `rgb`
    is the analysis copy of `image`, the decoded image the face detector looks at.

    Without OpenCV (the light image installs the runner without its `smart` extra) this is
    the edge measure, and the detector name says why."""
    try:
        import cv2  # heavy: imported only by the full runner
    except ModuleNotFoundError:  # not installed; any other ImportError (a shared library that
        # cannot be mapped under the memory limit) is an out-of-memory for the CLI to report
        interest = without_text(rgb, edge_interest(rgb), text_page)
        return Focus(interest=interest, detector="edges-no-opencv")

    from smartthumb.runner import subjects

    rgb8 = np.ascontiguousarray((rgb * 255).astype(np.uint8))
    # A contrib module: cv2's own stubs leave it out.
    saliency = cv2.saliency.StaticSaliencySpectralResidual_create()  # type: ignore[attr-defined]
    ok, saliency_map = saliency.computeSaliency(cv2.cvtColor(rgb8, cv2.COLOR_RGB2BGR))
    interest = edge_interest(rgb)
    if ok:
        blur = max(1, min(rgb.shape[:2]) // 30)
        interest = normalise(
            0.6 * normalise(box_blur(saliency_map.astype(np.float32), blur)) + 0.4 * interest
        )
    interest = normalise((1 - TEXTURE_SHARE) * interest + TEXTURE_SHARE * texture_contrast(rgb))
    interest = without_text(rgb, interest, text_page)
    found, names = subjects.detect(rgb8, image)
    detector = "+".join(names) if names else ("saliency" if ok else "edges")
    return Focus(interest=interest, faces=found, detector=detector)
