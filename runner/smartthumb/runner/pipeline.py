"""make_thumbnail: (input images, ThumbnailSpec) -> one image file and a RunResult."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from smartthumb.runner.encode import ALPHA_FORMATS, Upload, output_refusal, save
from smartthumb.runner.errors import BadInputError
from smartthumb.runner.focus import Focus, light_focus, smart_focus
from smartthumb.runner.geometry import (
    FULL,
    Window,
    best_window,
    fit_size,
    panel_widths,
    shrink_to_source,
)
from smartthumb.runner.interest import ANALYSIS_SIDE, analysis_copy, is_text_page, score_page
from smartthumb.runner.limits import MAX_INPUTS, Limits
from smartthumb.runner.load import ImageInput, Source, decode, open_source
from smartthumb.runner.spec import Box, InputReport, Mode, ReadingOrder, RunResult, ThumbnailSpec

RESAMPLE = Image.Resampling.BICUBIC
REDUCING_GAP = 2.0
"""Shrink by whole factors first (fast box filter), bicubic for the last 2x: as sharp as
Lanczos to the eye at thumbnail sizes, at about 60% of its cost."""


class _Clock:
    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.last = self.started
        self.timings: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = round(self.timings.get(name, 0.0) + (now - self.last) * 1000, 2)
        self.last = now

    def finish(self) -> dict[str, float]:
        self.timings["total"] = round((time.perf_counter() - self.started) * 1000, 2)
        return self.timings


def make_thumbnail(
    inputs: Sequence[ImageInput | str],
    spec: ThumbnailSpec,
    output: Path | Upload | str,
    *,
    fallback: bool = False,
    fallback_reason: str | None = None,
    limits: Limits | None = None,
) -> RunResult:
    """Produce the thumbnail described by `spec` at `output`.

    `fallback` is the light composer used after an OOM: no OpenCV, no models, pages
    analysed at a smaller size; the result is still a thumbnail of the requested mode.
    """
    limits = limits or Limits()
    paths = [Path(p) if isinstance(p, str) else p for p in inputs]
    output = Path(output) if isinstance(output, str) else output
    if not paths:
        raise BadInputError("no input images given")
    if len(paths) > MAX_INPUTS:
        raise BadInputError(f"{len(paths)} inputs given, at most {MAX_INPUTS} are accepted")
    if spec.mode is not Mode.pair and len(paths) != 1:
        raise BadInputError(f"mode '{spec.mode.value}' takes exactly one input, got {len(paths)}")
    run = _Run(spec=spec, output=output, limits=limits, fallback=fallback)
    clock = run.clock
    result = _pair(paths, run) if spec.mode is Mode.pair else _single(paths[0], run)
    result.fallback_used = fallback
    result.worker_warning = fallback_reason if fallback else None
    if fallback:
        result.method = f"fallback:{result.method}"
    result.timings_ms = clock.finish()
    return result


@dataclass
class _Run:
    """What every step of one thumbnail needs to know."""

    spec: ThumbnailSpec
    output: Path | Upload
    limits: Limits
    fallback: bool
    clock: _Clock = field(default_factory=_Clock)

    def focus(self, rgb: np.ndarray, text_page: bool, image: Image.Image) -> Focus:
        """`rgb` is the analysis copy of `image`."""
        return light_focus(rgb, text_page) if self.fallback else smart_focus(rgb, text_page, image)

    def check_output(self, size: tuple[int, int]) -> None:
        """Before any pixel is decoded: an enlarged output is held like a source."""
        refusal = output_refusal(*size, self.spec.format, self.limits.max_pixels)
        if refusal is not None:
            raise BadInputError(refusal)


def _scale_for(source: Source, need_w: float, need_h: float) -> float:
    return max(need_w / source.width, need_h / source.height)


def _single(path: ImageInput, run: _Run) -> RunResult:
    spec, clock = run.spec, run.clock
    source = open_source(path, run.limits)
    keep_alpha = spec.format in ALPHA_FORMATS
    detector: str | None = None
    try:
        if spec.mode is Mode.fit:
            size = fit_size(
                source.width, source.height, spec.width, spec.height, upscale=spec.upscale
            )
            run.check_output(size)
            image = decode(source, _scale_for(source, *size), keep_alpha=keep_alpha)
            clock.lap("decode")
            window = FULL
        elif spec.mode is Mode.resize:
            assert spec.width and spec.height  # guaranteed by the spec's validator
            size = (spec.width, spec.height)
            run.check_output(size)
            image = decode(source, _scale_for(source, *size), keep_alpha=keep_alpha)
            clock.lap("decode")
            window = FULL
        else:
            target_w, target_h = spec.crop_size()
            aspect = target_w / target_h
            # The window spans the whole image along one axis: decode for that span.
            span_w = min(source.width, source.height * aspect)
            size = shrink_to_source(
                target_w, target_h, round(span_w), round(span_w / aspect), upscale=spec.upscale
            )
            run.check_output(size)
            image = decode(source, size[0] / span_w, keep_alpha=keep_alpha)
            clock.lap("decode")
            rgb = analysis_copy(image)
            focus = run.focus(rgb, is_text_page(rgb), image)
            window = best_window(focus.interest, aspect, focus.faces)
            detector = focus.detector
            clock.lap("analyse")
        left, top, right, bottom = window.to_pixels(image.width, image.height)
        thumb = image.resize(
            size, RESAMPLE, box=(left, top, right, bottom), reducing_gap=REDUCING_GAP
        )
        clock.lap("resize")
        report = save(thumb, run.output, spec.format, spec.quality, grayscale=spec.grayscale)
        clock.lap("encode")
    finally:
        source.close()
    crop = _box(window, source)
    method = spec.mode.value if detector is None else f"{spec.mode.value}:{detector}"
    return RunResult(
        mode=spec.mode,
        method=method,
        output=report,
        selected=[0],
        inputs=[
            InputReport(
                index=0, width=source.width, height=source.height, crop=crop, detector=detector
            )
        ],
    )


def _box(window: Window, source: Source) -> Box:
    left, top, right, bottom = window.to_pixels(source.width, source.height)
    return Box(x=left, y=top, width=right - left, height=bottom - top)


@dataclass
class _Page:
    index: int
    path: ImageInput
    width: int
    height: int
    score: float
    usable: bool
    focus: Focus
    window: Window


def _survey(index: int, path: ImageInput, count: int, panel_aspect: float, run: _Run) -> _Page:
    """Score one page and find its best panel window, holding only a small copy of it. Both
    runners look at the same scale: the text test's thresholds hold at ANALYSIS_SIDE (at 160 px
    the letters of a page of prose blur to grey and it no longer reads as text)."""
    source = open_source(path, run.limits)
    try:
        small = decode(source, ANALYSIS_SIDE / max(source.width, source.height))
        rgb = analysis_copy(small)
        page = score_page(rgb, index, count, run.spec.skip_edges)
        focus = run.focus(rgb, page.text_heavy, small)  # `small` may still read the file
    finally:
        source.close()
    # A face on the page makes it a better cover than a busy background.
    score = page.score * (1.25 if focus.faces else 1.0)
    return _Page(
        index=index,
        path=path,
        width=source.width,
        height=source.height,
        score=round(score, 4),
        usable=not page.blank,
        focus=focus,
        window=best_window(focus.interest, panel_aspect, focus.faces),
    )


def _choose(pages: list[_Page]) -> list[_Page]:
    """The two best usable pages in reading order; one usable page is used twice."""
    candidates = [page for page in pages if page.usable] or pages
    best = sorted(candidates, key=lambda page: (-page.score, page.index))[:2]
    if len(best) == 1:
        return [best[0], best[0]]
    return sorted(best, key=lambda page: page.index)


def _panel(page: _Page, window: Window, size: tuple[int, int], limits: Limits) -> Image.Image:
    source = open_source(page.path, limits)
    try:
        need_w = size[0] / window.width
        need_h = size[1] / window.height
        image = decode(source, _scale_for(source, need_w, need_h))
        box = window.to_pixels(image.width, image.height)
        return image.resize(size, RESAMPLE, box=box, reducing_gap=REDUCING_GAP)
    finally:
        source.close()


def _pair(paths: list[ImageInput], run: _Run) -> RunResult:
    spec, clock = run.spec, run.clock
    canvas_w, canvas_h = spec.pair_canvas()
    run.check_output((canvas_w, canvas_h))
    left_w, right_w = panel_widths(canvas_w, spec.gap)
    panel_aspect = left_w / canvas_h
    pages: list[_Page] = []
    for i, path in enumerate(paths):
        pages.append(_survey(i, path, len(paths), panel_aspect, run))
        # Fetched bytes stay in memory only for the pages that can still be chosen (the
        # best two so far): at most three pages' bytes at once, and none fetched twice.
        keep = {page.index for page in _choose(pages)}
        for page in pages:
            if page.index not in keep and not isinstance(page.path, Path):
                page.path.release()
    clock.lap("analyse")
    chosen = _choose(pages)
    windows = [chosen[0].window, chosen[1].window]
    if chosen[0] is chosen[1]:
        # Same page twice: show two different parts of it, top (or left) part first.
        page = chosen[0]
        second = best_window(page.focus.interest, panel_aspect, page.focus.faces, avoid=page.window)
        windows = sorted([chosen[0].window, second], key=lambda w: (w.y, w.x))
    canvas = Image.new("RGB", (canvas_w, canvas_h), (0, 0, 0))
    slots = [(0, left_w), (left_w + spec.gap, right_w)]
    if spec.reading_order is ReadingOrder.rtl:  # the earlier page is read first, on the right
        slots.reverse()
    for page, window, (x, width) in zip(chosen, windows, slots, strict=True):
        canvas.paste(_panel(page, window, (width, canvas_h), run.limits), (x, 0))
    clock.lap("compose")
    report = save(canvas, run.output, spec.format, spec.quality, grayscale=spec.grayscale)
    clock.lap("encode")
    selected = [page.index for page in chosen]
    reports = []
    for page in pages:
        crop = None
        if page.index in selected:
            used = windows[selected.index(page.index)]
            left, top, right, bottom = used.to_pixels(page.width, page.height)
            crop = Box(x=left, y=top, width=right - left, height=bottom - top)
        reports.append(
            InputReport(
                index=page.index,
                width=page.width,
                height=page.height,
                score=page.score,
                crop=crop,
                detector=page.focus.detector,
            )
        )
    detectors = sorted({page.focus.detector for page in chosen})
    return RunResult(
        mode=Mode.pair,
        method=f"pair:{'+'.join(detectors)}",
        output=report,
        selected=selected,
        inputs=reports,
    )
