"""The numpy interest measures on real-looking inputs."""

from __future__ import annotations

import numpy as np
from cropeval import samples
from images import line_art_page, text_page
from smartthumb.runner.interest import (
    analysis_copy,
    luminance,
    score_page,
    stripes,
    texture_contrast,
)


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


def test_every_text_page_of_the_evaluation_is_text_heavy_and_nothing_else_is() -> None:
    """Pair mode's page scoring on the crop evaluation's pages: prose with a headline, prose
    around a figure (whatever the page size, also where the letters blur to grey at the
    analysis scale), and none of its photos, textures, faces, groups or products."""
    wrong = []
    for sample in samples():
        page = score_page(analysis_copy(sample.image), 5, 10, 1)
        if page.text_heavy != (sample.category == "text"):
            wrong.append((sample.name, round(page.stripes, 2), round(page.edge_density, 3)))
    assert wrong == []


def test_vertical_text_is_stripes_too_and_a_drawing_is_not() -> None:
    """Manga set their text in columns: the measure is the same turned through 90 degrees."""
    page = luminance(analysis_copy(text_page()))
    assert stripes(page) > 3
    assert stripes(page.T.copy()) > 3
    assert stripes(luminance(analysis_copy(line_art_page("astronaut")))) < 1.5
