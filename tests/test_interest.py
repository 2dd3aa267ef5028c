"""The numpy interest measures on real-looking inputs."""

from __future__ import annotations

import numpy as np
from cropeval import samples
from images import line_art_page, text_page
from smartthumb.runner.interest import (
    analysis_copy,
    is_text_page,
    luminance,
    score_page,
    stripes,
    text_lines,
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
            wrong.append((sample.name, round(page.edge_density, 3)))
    assert wrong == []


def test_vertical_text_is_stripes_too_and_a_drawing_is_not() -> None:
    """Manga set their text in columns: the measure is the same turned through 90 degrees."""
    page = luminance(analysis_copy(text_page()))
    assert stripes(page) > 3
    assert stripes(page.T.copy()) > 3
    assert stripes(luminance(analysis_copy(line_art_page("astronaut")))) < 1.5


def test_lines_of_text_are_found_around_a_figure_and_not_on_it() -> None:
    """A horse drawn in outline among lines of prose (an evaluation page): the measure of
    lines is high on the prose and low on the drawing."""
    page = next(s for s in samples() if s.name == "text-lineart-04")
    rgb = analysis_copy(page.image)
    lines = text_lines(rgb)
    height, width = lines.shape
    x0, y0, x1, y1 = page.boxes[0]
    scale_x, scale_y = width / page.image.width, height / page.image.height
    figure = np.zeros_like(lines, bool)
    figure[round(y0 * scale_y) : round(y1 * scale_y), round(x0 * scale_x) : round(x1 * scale_x)] = (
        True
    )
    # The page's margins hold no lines either: compare the figure with the prose only.
    prose = ~figure & (luminance(rgb) < 0.97)
    assert float(lines[prose].mean()) > 1.5 * float(lines[figure].mean())
    assert is_text_page(rgb)
