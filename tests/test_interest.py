"""The numpy interest measures on real-looking inputs."""

from __future__ import annotations

import numpy as np
from smartthumb.runner.interest import texture_contrast


def test_a_plain_object_on_a_busy_texture_stands_out() -> None:
    """Gravel-like noise everywhere, a smooth disc in one corner: the texture has edges
    everywhere, so only a measure of how unlike its surroundings a region is finds the disc."""
    rng = np.random.default_rng(3)
    rgb = rng.uniform(0.2, 0.8, (160, 240, 1)).repeat(3, axis=2).astype(np.float32)
    ys, xs = np.mgrid[:160, :240]
    disc = (ys - 50) ** 2 + (xs - 170) ** 2 < 30**2
    rgb[disc] = (0.9, 0.5, 0.2)
    contrast = texture_contrast(rgb)
    assert contrast.shape == (160, 240)
    assert float(contrast[disc].mean()) > 4 * float(contrast[~disc].mean())
    assert np.unravel_index(np.argmax(contrast), contrast.shape)[1] > 120  # right half
