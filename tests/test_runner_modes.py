"""The runner's modes on real photos: what ends up in the thumbnail, and its exact size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cropeval import samples
from images import (
    ASTRONAUT_FACE,
    art_page,
    blank_page,
    line_art_page,
    photo,
    save_photo,
    text_page,
    write_pages,
)
from PIL import Image
from smartthumb.runner.geometry import panel_widths
from smartthumb.runner.pipeline import make_thumbnail
from smartthumb.runner.spec import Mode, OutputFormat, ThumbnailSpec


def test_pair_picks_the_two_best_pages_and_fills_a_16_9_canvas(tmp_path: Path) -> None:
    pages = write_pages(
        tmp_path,
        [
            art_page("rocket"),
            text_page(),
            art_page("astronaut"),
            blank_page(),
            art_page("chelsea"),
            text_page(),
            art_page("coffee"),
        ],
    )
    out = tmp_path / "pair.jpg"
    result = make_thumbnail(pages, ThumbnailSpec(mode=Mode.pair, skip_edges=1), out)

    assert result.output.width == 1200 and result.output.height == 675
    picked = set(result.selected)
    assert picked.isdisjoint({1, 3, 5}), "text and blank pages must lose to art pages"
    assert len(picked) == 2
    assert result.selected == sorted(result.selected), "panels keep reading order"
    scores = {entry.index: entry.score for entry in result.inputs}
    assert scores[3] < 0.05, "a blank page scores near zero"
    assert scores[2] > scores[1] and scores[2] > scores[5]
    with Image.open(out) as image:
        assert image.size == (1200, 675)


def test_pair_of_a_black_and_white_chapter_skips_its_text_pages(tmp_path: Path) -> None:
    # Manga pages have no colour and lots of paper, like text pages: only the density and
    # regularity of the strokes tells them apart.
    pages = write_pages(
        tmp_path,
        [
            text_page(),
            line_art_page("chelsea"),
            text_page(),
            line_art_page("rocket"),
            text_page(),
        ],
    )
    result = make_thumbnail(
        pages, ThumbnailSpec(mode=Mode.pair, skip_edges=0), tmp_path / "manga.jpg"
    )
    assert result.selected == [1, 3], [(e.index, e.score) for e in result.inputs]


@pytest.mark.parametrize("fallback", [False, True], ids=["smart", "fallback"])
def test_pair_prefers_manga_pages_to_the_evaluations_text_pages(
    tmp_path: Path, fallback: bool
) -> None:
    """The crop evaluation's text pages (small prose that blurs to grey at the analysis
    scale, prose around a figure) lose to the faintest manga pages, in both runners."""
    text = {s.name: s.image for s in samples() if s.category == "text"}
    pages = write_pages(
        tmp_path,
        [
            text["text-poster-02"],
            line_art_page("chelsea"),
            text["text-lineart-00"],
            line_art_page("rocket"),
            text["text-poster-04"],
        ],
    )
    result = make_thumbnail(
        pages,
        ThumbnailSpec(mode=Mode.pair, skip_edges=0),
        tmp_path / "chapter.jpg",
        fallback=fallback,
    )
    assert result.selected == [1, 3], [(e.index, e.score) for e in result.inputs]


@pytest.mark.parametrize("fallback", [False, True], ids=["smart", "fallback"])
def test_a_comic_sized_text_page_scores_as_text_in_both_runners(
    tmp_path: Path, fallback: bool
) -> None:
    """A full page of prose at comic size (1600x2400) takes the text penalty in the light
    runner too: surveyed at a smaller scale its letters blurred to grey, it stopped reading
    as text and scored like the art pages beside it."""
    pages = write_pages(
        tmp_path,
        [
            art_page("rocket", (1600, 2400)),
            text_page((1600, 2400)),
            art_page("coffee", (1600, 2400)),
        ],
    )
    result = make_thumbnail(
        pages,
        ThumbnailSpec(mode=Mode.pair, skip_edges=0),
        tmp_path / "pages.jpg",
        fallback=fallback,
    )
    scores = {entry.index: entry.score for entry in result.inputs}
    assert scores[1] < 0.2 * min(scores[0], scores[2]), scores


def test_pair_panels_meet_the_gap_without_a_stray_column(tmp_path: Path) -> None:
    pages = write_pages(tmp_path, [photo("coffee"), photo("chelsea")])
    out = tmp_path / "pair.png"
    make_thumbnail(
        pages,
        ThumbnailSpec(mode=Mode.pair, skip_edges=0, format=OutputFormat.png, width=1201, gap=5),
        out,
    )
    canvas = np.asarray(Image.open(out).convert("RGB")).astype(int)
    left, right = panel_widths(1201, 5)
    assert left + 5 + right == canvas.shape[1] == 1201
    assert canvas[:, left : left + 5].max() == 0, "the gap is exactly 5 px wide"
    for column in (0, left - 1, left + 5, canvas.shape[1] - 1):
        assert canvas[:, column].mean() > 20, f"column {column} must be picture, not black"


@pytest.mark.parametrize("order", ["ltr", "rtl"])
def test_pair_reading_order_puts_the_earlier_page_first(tmp_path: Path, order: str) -> None:
    """Manga reads right to left: there the earlier page is the right-hand panel."""
    pages = write_pages(tmp_path, [art_page("chelsea"), art_page("coffee")])
    out = tmp_path / f"{order}.png"
    spec = ThumbnailSpec(mode=Mode.pair, skip_edges=0, format="png", reading_order=order)
    result = make_thumbnail(pages, spec, out)
    assert result.selected == [0, 1], "the two pages, in reading order"
    left_w, _ = panel_widths(1200, spec.gap)
    with Image.open(out) as pair:
        left = np.asarray(pair.crop((0, 0, left_w, 675)).convert("RGB"), dtype=np.float32)
        right = np.asarray(
            pair.crop((left_w + spec.gap, 0, 1200, 675)).convert("RGB"), dtype=np.float32
        )
    # The cat's page is grey-brown, the coffee page's cup sits on a vivid red-orange table.
    redness = [float((panel[..., 0] - panel[..., 2]).mean()) for panel in (left, right)]
    cat_panel = 0 if redness[0] < redness[1] else 1
    assert cat_panel == (0 if order == "ltr" else 1), redness


def test_pair_with_one_page_uses_it_twice(tmp_path: Path) -> None:
    pages = write_pages(tmp_path, [art_page("astronaut")])
    result = make_thumbnail(pages, ThumbnailSpec(mode=Mode.pair), tmp_path / "one.jpg")
    assert result.selected == [0, 0]
    assert result.output.width == 1200


def test_pair_penalises_edge_pages_without_excluding_them(tmp_path: Path) -> None:
    same = art_page("astronaut")
    pages = write_pages(
        tmp_path, [same, blank_page(), blank_page(), same, blank_page(), blank_page(), blank_page()]
    )
    result = make_thumbnail(
        pages, ThumbnailSpec(mode=Mode.pair, skip_edges=2), tmp_path / "edges.jpg"
    )
    scores = {entry.index: entry.score for entry in result.inputs}
    assert scores[0] == pytest.approx(scores[3] * 0.6, rel=0.02)
    assert set(result.selected) == {0, 3}, "an edge page still wins over blank pages"


def test_crop_keeps_the_face_in_frame(tmp_path: Path) -> None:
    source = save_photo(tmp_path, "astronaut")
    result = make_thumbnail(
        [source], ThumbnailSpec(mode=Mode.crop, width=200, height=400), tmp_path / "tall.jpg"
    )
    assert result.inputs[0].detector == "face"
    crop = result.inputs[0].crop
    assert crop is not None
    x0, y0, x1, y1 = ASTRONAUT_FACE
    assert crop.x <= x0 and crop.x + crop.width >= x1, crop
    assert crop.y <= y0 and crop.y + crop.height >= y1, crop
    assert (result.output.width, result.output.height) == (200, 400)


def test_a_wide_crop_keeps_the_whole_head_above_the_face(tmp_path: Path) -> None:
    """The cameraman's face box starts below his eyebrows; his head (hair, the cap's top)
    reaches 0.8 of the box's height above it. A wide crop of a tall photo holds all of it."""
    source = tmp_path / "cameraman.png"
    photo("camera").crop((0, 0, 358, 512)).save(source)
    result = make_thumbnail(
        [source], ThumbnailSpec(mode=Mode.crop, width=320, height=180), tmp_path / "wide.jpg"
    )
    assert result.inputs[0].detector == "face"
    crop = result.inputs[0].crop
    assert crop is not None
    head_top, chin = 65, 205  # labelled by eye in the 512 px photo
    assert crop.y <= head_top and crop.y + crop.height >= chin, crop


@pytest.mark.parametrize("fallback", [False, True], ids=["smart", "fallback"])
def test_a_crop_of_a_text_page_keeps_its_figure(tmp_path: Path, fallback: bool) -> None:
    """A horse in outline among lines of prose (an evaluation page): the lines of text are
    as busy as the drawing, yet a tall crop holds the drawing, in both runners."""
    page = next(s for s in samples() if s.name == "text-lineart-04")
    source = tmp_path / "page.png"
    page.image.save(source)
    result = make_thumbnail(
        [source],
        ThumbnailSpec(mode=Mode.crop, width=619, height=1100),
        tmp_path / "tall.jpg",
        fallback=fallback,
    )
    crop = result.inputs[0].crop
    assert crop is not None
    x0, _, x1, _ = page.boxes[0]
    assert crop.x <= x0 + 8 and crop.x + crop.width >= x1 - 8, (crop, page.boxes)


def test_crop_without_faces_follows_the_salient_subject(tmp_path: Path) -> None:
    # The rocket stands in the middle third of a wide photo; a tall crop must hold it.
    source = save_photo(tmp_path, "rocket")
    result = make_thumbnail(
        [source], ThumbnailSpec(mode=Mode.crop, width=100, height=300), tmp_path / "rocket.jpg"
    )
    assert result.inputs[0].detector == "saliency"
    crop = result.inputs[0].crop
    assert crop is not None
    rocket_x = 290  # the rocket's body in the 640x427 photo
    assert crop.x <= rocket_x <= crop.x + crop.width


def test_crop_size_from_aspect_and_no_upscaling(tmp_path: Path) -> None:
    source = save_photo(tmp_path, "coffee")  # 600x400
    result = make_thumbnail(
        [source], ThumbnailSpec(mode=Mode.crop, width=2000, aspect="1:1"), tmp_path / "square.jpg"
    )
    assert result.output.width == result.output.height == 400, "shrinks to what the source has"
    bigger = make_thumbnail(
        [source],
        ThumbnailSpec(mode=Mode.crop, width=2000, aspect="1:1", upscale=True),
        tmp_path / "up.jpg",
    )
    assert bigger.output.width == bigger.output.height == 2000


@pytest.mark.parametrize(
    ("box", "upscale", "expected"),
    [
        ((300, 300), False, (300, 200)),
        ((None, 100), False, (150, 100)),
        ((2000, 2000), False, (600, 400)),
        ((1200, None), True, (1200, 800)),
    ],
)
def test_fit_keeps_aspect_and_never_upscales_unless_asked(
    tmp_path: Path,
    box: tuple[int | None, int | None],
    upscale: bool,
    expected: tuple[int, int],
) -> None:
    source = save_photo(tmp_path, "coffee")
    spec = ThumbnailSpec(mode=Mode.fit, width=box[0], height=box[1], upscale=upscale)
    result = make_thumbnail([source], spec, tmp_path / "fit.jpg")
    assert (result.output.width, result.output.height) == expected
    assert Image.open(tmp_path / "fit.jpg").size == expected


def test_resize_gives_exact_dimensions(tmp_path: Path) -> None:
    source = save_photo(tmp_path, "coffee")
    result = make_thumbnail(
        [source], ThumbnailSpec(mode=Mode.resize, width=800, height=600), tmp_path / "exact.jpg"
    )
    assert Image.open(tmp_path / "exact.jpg").size == (800, 600)
    assert result.method == "resize"


@pytest.mark.parametrize("fmt", list(OutputFormat))
def test_every_output_format_decodes_in_grey_and_colour(tmp_path: Path, fmt: OutputFormat) -> None:
    source = save_photo(tmp_path, "chelsea")
    for grayscale in (False, True):
        out = tmp_path / f"out-{grayscale}.{fmt.extension}"
        spec = ThumbnailSpec(mode=Mode.fit, width=512, format=fmt, quality=80, grayscale=grayscale)
        result = make_thumbnail([source], spec, out)
        with Image.open(out) as image:
            assert image.format.lower() == ("jpeg" if fmt is OutputFormat.jpeg else fmt.value)
            assert image.size == (451, 300)
            pixels = np.asarray(image.convert("RGB")).astype(int)
        channel_spread = np.abs(pixels[..., 0] - pixels[..., 2]).mean()
        assert (channel_spread < 2) if grayscale else (channel_spread > 5)
        assert result.output.bytes == out.stat().st_size


def test_exif_rotation_is_applied(tmp_path: Path) -> None:
    image = photo("coffee")  # 600x400 landscape, stored with "rotate 90" orientation
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    image.save(path, "JPEG", exif=exif.tobytes())
    result = make_thumbnail(
        [path], ThumbnailSpec(mode=Mode.fit, width=1000, height=1000), tmp_path / "upright.jpg"
    )
    assert (result.inputs[0].width, result.inputs[0].height) == (400, 600)
    assert (result.output.width, result.output.height) == (400, 600)


def test_transparency_is_kept_in_png_and_flattened_on_white_in_jpeg(tmp_path: Path) -> None:
    logo = Image.new("RGBA", (400, 200), (0, 0, 0, 0))
    logo.paste((200, 30, 30, 255), (100, 50, 300, 150))
    path = tmp_path / "logo.png"
    logo.save(path)
    make_thumbnail(
        [path],
        ThumbnailSpec(mode=Mode.fit, width=200, format=OutputFormat.png),
        tmp_path / "logo-small.png",
    )
    with Image.open(tmp_path / "logo-small.png") as png:
        pixel = png.getpixel((0, 0))
        assert png.mode == "RGBA" and isinstance(pixel, tuple) and pixel[3] == 0
    make_thumbnail([path], ThumbnailSpec(mode=Mode.fit, width=200), tmp_path / "logo.jpg")
    with Image.open(tmp_path / "logo.jpg") as jpeg:
        pixel = jpeg.convert("RGB").getpixel((2, 2))
        assert isinstance(pixel, tuple) and min(pixel) > 240, "transparent becomes white"


def test_large_jpeg_is_decoded_at_reduced_scale(tmp_path: Path) -> None:
    source = save_photo(tmp_path, "astronaut", size=(4000, 3000))
    result = make_thumbnail(
        [source], ThumbnailSpec(mode=Mode.crop, width=1200, height=675), tmp_path / "big.jpg"
    )
    assert (result.output.width, result.output.height) == (1200, 675)
    assert result.inputs[0].crop is not None and result.inputs[0].crop.width == 4000
    assert result.inputs[0].detector == "face"


def test_fallback_is_light_and_says_so(tmp_path: Path) -> None:
    pages = write_pages(tmp_path, [art_page("astronaut"), text_page(), art_page("coffee")])
    result = make_thumbnail(
        pages,
        ThumbnailSpec(mode=Mode.pair, skip_edges=0),
        tmp_path / "fb.jpg",
        fallback=True,
        fallback_reason="OOMKilled",
    )
    assert result.fallback_used is True
    assert result.worker_warning == "OOMKilled"
    assert result.method.startswith("fallback:pair")
    assert 1 not in result.selected
    assert Image.open(tmp_path / "fb.jpg").size == (1200, 675)


def _gif(path: Path) -> None:
    frames = [photo("coffee").resize((150, 100)), photo("chelsea").resize((150, 100))]
    frames[0].save(path, save_all=True, append_images=frames[1:])


def _png16(path: Path) -> None:
    ramp = np.linspace(0, 65535, 200 * 300).reshape(200, 300).astype(np.uint16)
    Image.fromarray(ramp).save(path)


@pytest.mark.parametrize(
    ("name", "write"),
    [
        ("animated.gif", _gif),
        ("grey16.png", _png16),
        ("cmyk.jpg", lambda path: photo("coffee").convert("CMYK").save(path)),
        ("palette.bmp", lambda path: photo("coffee").convert("P").save(path)),
        ("photo.tiff", lambda path: photo("coffee").save(path)),
        ("photo.webp", lambda path: photo("coffee").save(path, quality=90)),
        ("photo.avif", lambda path: photo("coffee").save(path, quality=90)),
    ],
)
def test_every_supported_input_format_is_read(tmp_path: Path, name: str, write) -> None:
    source = tmp_path / name
    write(source)
    out = tmp_path / "out.png"
    make_thumbnail(
        [source], ThumbnailSpec(mode=Mode.crop, width=60, height=40, format=OutputFormat.png), out
    )
    pixels = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert pixels.shape == (40, 60, 3)
    assert pixels.std() > 5, "the picture survived decoding (not a flat colour)"
