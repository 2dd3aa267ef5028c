"""What a thumbnail should be (ThumbnailSpec) and what the runner reports (RunResult).

These models are the single source of truth: the CLI, the HTTP API, the job store and the
ThumbnailJob CRD schema are all derived from them.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_SIDE = 8192
"""Largest output width or height; anything bigger is refused as absurd. The output's pixels
have a limit of their own too (encode.max_output_pixels: SMARTTHUMB_MAX_PIXELS, less for
WebP and AVIF), so 8192 is reached by banners, not squares."""
MIN_SIDE = 16
"""Smallest side the service completes from an aspect ratio (crop's `aspect`, pair's 16:9):
the smallest icon size in use. Below it a subject-aware crop has nothing left to show, and
`width=8192, aspect=9999:1` would quietly become a strip 1 px high. A side given explicitly
may be smaller (a 1x1 resize is a dominant-colour placeholder)."""


class Mode(str, Enum):
    pair = "pair"
    crop = "crop"
    fit = "fit"
    resize = "resize"


class ReadingOrder(str, Enum):
    ltr = "ltr"
    rtl = "rtl"


class OutputFormat(str, Enum):
    jpeg = "jpeg"
    png = "png"
    webp = "webp"
    avif = "avif"

    @property
    def media_type(self) -> str:
        return f"image/{self.value}"

    @property
    def extension(self) -> str:
        return "jpg" if self is OutputFormat.jpeg else self.value

    @classmethod
    def from_name(cls, name: str) -> OutputFormat:
        """The format by its name or its file extension (jpg is JPEG); ValueError if none."""
        return cls.jpeg if name == "jpg" else cls(name)


Side = Annotated[int, Field(ge=1, le=MAX_SIDE)]

PAIR_DEFAULT_WIDTH = 1200

COMPLETED_SIDE_OUT_OF_RANGE = (
    f"crop: the side completed from aspect must come out {MIN_SIDE} to {MAX_SIDE} px; "
    "give both width and height, or a less extreme aspect"
)
PAIR_SIDE_TOO_SHORT = (
    f"pair: the side completed from 16:9 must come out at least {MIN_SIDE} px; "
    "give a larger width or height, or both"
)
ASPECT_PATTERN = r"^[1-9][0-9]{0,3}:[1-9][0-9]{0,3}$"


class ThumbnailSpec(BaseModel):
    """How to turn the input images into one thumbnail."""

    model_config = ConfigDict(extra="forbid", use_enum_values=False)

    mode: Mode = Field(
        Mode.pair,
        description=(
            "pair: best two pages side by side on a 16:9 canvas; crop: subject-aware crop to "
            "width x height (or aspect); fit: inside width x height, aspect kept; resize: exact "
            "width x height."
        ),
    )
    width: Side | None = Field(None, description="Output width in pixels (pair: default 1200).")
    height: Side | None = Field(None, description="Output height in pixels (pair: width*9/16).")
    aspect: str | None = Field(
        None,
        max_length=9,
        pattern=ASPECT_PATTERN,
        description=(
            "crop only: aspect ratio W:H used when width or height is missing; the side it "
            f"completes must come out {MIN_SIDE} to {MAX_SIDE} px."
        ),
    )
    format: OutputFormat = Field(OutputFormat.jpeg, description="Output image format.")
    quality: int = Field(82, ge=1, le=100, description="Encoder quality (jpeg, webp, avif).")
    grayscale: bool = Field(False, description="Convert the output to grayscale.")
    upscale: bool = Field(False, description="fit/crop: allow enlarging a small source.")
    skip_edges: int = Field(
        2, ge=0, le=50, description="pair: the first/last N pages are penalised (not excluded)."
    )
    gap: int = Field(5, ge=0, le=400, description="pair: pixels between the two panels.")
    reading_order: ReadingOrder = Field(
        ReadingOrder.ltr,
        description=(
            "pair: ltr puts the earlier page on the left; rtl on the right (manga, and books "
            "in Arabic or Hebrew)."
        ),
    )

    @model_validator(mode="after")
    def _sizes_fit_the_mode(self) -> ThumbnailSpec:
        if self.mode is Mode.resize and (self.width is None or self.height is None):
            raise ValueError("mode 'resize' needs both width and height")
        if self.mode is Mode.fit and self.width is None and self.height is None:
            raise ValueError("mode 'fit' needs width or height")
        if self.mode is Mode.crop:
            if self.width is None and self.height is None:
                raise ValueError("mode 'crop' needs width and height, or one of them and aspect")
            if (self.width is None or self.height is None) and self.aspect is None:
                raise ValueError("mode 'crop' needs both width and height, or aspect with one")
            if self.width is None or self.height is None:
                width, height = self.crop_size()
                completed = height if self.height is None else width
                if not MIN_SIDE <= completed <= MAX_SIDE:
                    raise ValueError(
                        f"{COMPLETED_SIDE_OUT_OF_RANGE} (aspect {self.aspect} makes "
                        f"{width}x{height})"
                    )
        if self.aspect is not None and self.mode is not Mode.crop:
            raise ValueError("aspect applies to mode 'crop' only")
        if self.mode is Mode.pair:
            width, height = self.pair_canvas()
            if width < self.gap + 2:
                raise ValueError("pair canvas is too narrow for two panels and the gap")
            if (self.width is None) != (self.height is None):
                completed = height if self.height is None else width
                if completed < MIN_SIDE:
                    raise ValueError(f"{PAIR_SIDE_TOO_SHORT} (the canvas is {width}x{height})")
        return self

    def pair_canvas(self) -> tuple[int, int]:
        """The canvas of mode pair: 16:9 from whichever side is given (both: as given)."""
        if self.width and self.height:
            return self.width, self.height
        if self.height:
            # A tall request must not turn into a square when the width hits MAX_SIDE.
            height = min(self.height, round(MAX_SIDE * 9 / 16))
            return round(height * 16 / 9), height
        width = self.width or PAIR_DEFAULT_WIDTH
        return width, max(1, round(width * 9 / 16))

    def crop_size(self) -> tuple[int, int]:
        """Target size of mode crop, completing a missing side from the aspect ratio (the
        validator keeps that side within MIN_SIDE..MAX_SIDE)."""
        if self.width and self.height:
            return self.width, self.height
        aw, ah = (int(part) for part in (self.aspect or "1:1").split(":"))
        if self.width:
            return self.width, scaled(self.width, ah, aw)
        assert self.height is not None
        return scaled(self.height, aw, ah), self.height

    def output_size(self) -> tuple[int, int] | None:
        """The output's size where the spec alone decides it (resize, pair, crop with
        upscale); None where the source's size takes part (fit, crop without upscale)."""
        if self.mode is Mode.resize:
            assert self.width and self.height  # guaranteed by the validator
            return self.width, self.height
        if self.mode is Mode.pair:
            return self.pair_canvas()
        if self.mode is Mode.crop and self.upscale:
            return self.crop_size()
        return None


def scaled(side: int, numerator: int, denominator: int) -> int:
    """side * numerator / denominator rounded half up, in integers: the CRD's CEL rule
    computes the same expression, so the API server and the model agree to the pixel."""
    return (2 * side * numerator + denominator) // (2 * denominator)


class Box(BaseModel):
    """A rectangle in the source image's pixel coordinates (after EXIF rotation)."""

    x: int
    y: int
    width: int
    height: int


class InputReport(BaseModel):
    """What the runner made of one input image."""

    index: int
    width: int = Field(description="Source width after EXIF rotation.")
    height: int
    score: float | None = Field(None, description="pair: visual-interest score of the page.")
    crop: Box | None = Field(None, description="The region of this input that was used.")
    detector: str | None = Field(None, description="What decided the crop (face, saliency, ...).")


class OutputReport(BaseModel):
    format: OutputFormat
    width: int
    height: int
    bytes: int


class RunResult(BaseModel):
    """The runner's answer, printed as JSON on stdout (and the termination message)."""

    mode: Mode
    method: str = Field(description="What produced the thumbnail, e.g. 'pair:face+saliency'.")
    fallback_used: bool = False
    worker_warning: str | None = None
    output: OutputReport
    selected: list[int] = Field(default_factory=list, description="Indexes of the inputs used.")
    inputs: list[InputReport] = Field(default_factory=list)
    timings_ms: dict[str, float] = Field(default_factory=dict)
