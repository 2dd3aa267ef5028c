"""ThumbnailSpec: the sizes each mode derives, and the combinations it refuses."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from smartthumb.runner.spec import MAX_SIDE, Mode, ThumbnailSpec


@pytest.mark.parametrize(
    ("width", "height", "canvas"),
    [
        (None, None, (1200, 675)),
        (1000, None, (1000, 562)),
        (None, 675, (1200, 675)),
        (None, MAX_SIDE, (MAX_SIDE, 4608)),  # stays 16:9 instead of becoming square
        (800, 800, (800, 800)),  # both given: as asked
    ],
)
def test_pair_canvas(width: int | None, height: int | None, canvas: tuple[int, int]) -> None:
    assert ThumbnailSpec(mode=Mode.pair, width=width, height=height).pair_canvas() == canvas


def test_crop_size_completes_a_side_from_the_aspect() -> None:
    assert ThumbnailSpec(mode=Mode.crop, width=1200, aspect="16:9").crop_size() == (1200, 675)
    assert ThumbnailSpec(mode=Mode.crop, height=400, aspect="3:4").crop_size() == (300, 400)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"mode": "pair", "width": 6, "gap": 5}, "too narrow"),
        ({"mode": "fit", "aspect": "1:1", "width": 5}, "aspect applies to mode 'crop' only"),
        ({"mode": "crop", "aspect": "0:1", "width": 5}, "aspect"),
        ({"mode": "fit", "width": 10, "sharpen": True}, "sharpen"),
    ],
)
def test_refused_specs_say_why(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ThumbnailSpec.model_validate(fields)
