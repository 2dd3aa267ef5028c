"""The crop window over an interest map: whole subjects first, heads before everything."""

from __future__ import annotations

import numpy as np
from smartthumb.runner.geometry import Face, Window, best_window


def blob(interest: np.ndarray, x0: int, x1: int, y0: int, y1: int, value: float) -> None:
    interest[y0:y1, x0:x1] = value


def holds(window: Window, lo: float, hi: float) -> bool:
    """At least 98 % of [lo, hi] inside the window (what the window search calls whole)."""
    inside = min(window.x + window.width, hi) - max(window.x, lo)
    return inside >= 0.98 * (hi - lo)


def test_a_face_outweighs_a_salient_background() -> None:
    """A bright, busy region on the left; a face with little interest of its own on the
    right. The window (a quarter of the width) holds the whole head."""
    interest = np.full((100, 400), 0.02, np.float32)
    blob(interest, 20, 110, 10, 90, 1.0)
    face = Face(0.78, 0.40, 0.84, 0.55)
    window = best_window(interest, 1.0, [face])
    head = face.with_hair_and_chin()
    assert holds(window, head.x0, head.x1), (window, head)


def test_a_subject_is_held_whole_rather_than_halves_of_two() -> None:
    """Two equal objects either side of the centre, closer than the window is wide: every
    window over both holds the same interest, and the central one holds two halves; the
    crop keeps one of them whole."""
    interest = np.full((100, 400), 0.0, np.float32)
    blob(interest, 130, 190, 30, 70, 1.0)
    blob(interest, 210, 270, 30, 70, 1.0)
    window = best_window(interest, 1.0, [])
    assert holds(window, 130 / 400, 190 / 400) or holds(window, 210 / 400, 270 / 400), window


def test_a_person_box_is_not_grown_like_a_face() -> None:
    person = Face(0.3, 0.05, 0.5, 0.98, 0.9, person=True)
    assert person.with_hair_and_chin() == person
    face = Face(0.3, 0.3, 0.4, 0.45)
    grown = face.with_hair_and_chin()
    assert grown.y0 < face.y0 and grown.y1 > face.y1 and grown.x0 < face.x0 < face.x1 < grown.x1


def test_the_window_is_placed_finer_than_the_interest_map() -> None:
    """A person box just narrower than the window, between the map's samples (a 50-sample
    map: samples 0.02 apart). Placed only on whole samples, the window would cut 3 % of it;
    it holds it whole."""
    interest = np.full((25, 50), 0.1, np.float32)
    person = Face(0.51, 0.2, 0.808, 0.9, person=True)
    window = best_window(interest, 0.6, [person])  # 0.3 of the width
    assert window.width == 0.3
    assert window.x <= person.x0 and window.x + window.width >= person.x1, window


def test_of_two_groups_of_heads_the_larger_face_area_is_kept() -> None:
    """One large head on the left, two small ones on the right; the window holds either the
    large one or both small ones. Counting whole heads would pick the pair; the crop keeps
    the most face, the large head."""
    interest = np.full((100, 400), 0.05, np.float32)
    large = Face(0.08, 0.30, 0.20, 0.60)
    small = [Face(0.62, 0.45, 0.66, 0.52), Face(0.72, 0.45, 0.76, 0.52)]
    window = best_window(interest, 1.0, [large, *small])  # a quarter of the width
    head = large.with_hair_and_chin()
    assert holds(window, head.x0, head.x1), window
    assert window.x + window.width < small[0].x0, window


def test_a_small_subject_is_framed_in_the_middle_of_the_window() -> None:
    """A small object left of centre on a flat background: every window that holds it holds
    the same interest. The window is centred on the object, not pushed towards the image's
    centre until the object touches its edge."""
    interest = np.full((100, 400), 0.05, np.float32)
    blob(interest, 100, 140, 40, 60, 1.0)  # 0.25..0.35 of the width
    window = best_window(interest, 1.0, [])  # 0.25 of the width
    middle = window.x + window.width / 2
    assert abs(middle - 0.30) < 0.02, window


def test_a_subject_longer_than_the_window_is_not_avoided() -> None:
    """A small object, then a long one (wider than the window) holding far more interest.
    Every window over the long one cuts it, so none is blamed for it: the window goes over
    the long subject instead of squeezing into the margin beside the small one to stay off
    it."""
    interest = np.full((100, 400), 0.05, np.float32)
    blob(interest, 40, 100, 40, 60, 1.0)  # 0.10..0.25 of the width
    blob(interest, 120, 380, 30, 70, 0.8)  # 0.30..0.95
    window = best_window(interest, 1.0, [])  # 0.25 of the width
    inside = min(window.x + window.width, 0.95) - max(window.x, 0.30)
    assert inside >= 0.9 * window.width, window


def test_the_window_is_centred_on_the_subjects_mass() -> None:
    """A large object and a small one that fit in the window together, on a flat
    background: every window holding both holds the same interest. The window's middle is
    their centre of mass (near the large one), not the middle of the span they cover."""
    interest = np.full((100, 400), 0.05, np.float32)
    blob(interest, 100, 160, 20, 80, 1.0)  # 0.25..0.40, 60x60
    blob(interest, 190, 200, 45, 55, 1.0)  # 0.475..0.50, 10x10
    window = best_window(interest, 1.5, [])  # 0.375 of the width
    middle = window.x + window.width / 2
    assert abs(middle - 0.33) < 0.02, window
