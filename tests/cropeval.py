"""The smart-crop evaluation's data set and metric (bench/eval_crops.py runs it; tests check it).

Every image is built here, deterministically, from scikit-image's bundled photos and textures
(none fetched) and from Pillow drawing; each comes with hand-labelled or known subject boxes.

The metric is that of issue #12's external evaluation: for each aspect, the largest window of
that aspect at native scale (it spans the image along one axis); a method's window is *kept*
when its subject coverage is at least KEEP (98 %) of the best coverage any window position of
that size reaches. Coverage is the share of the subjects' total area inside the window: with
boxes b_i and window w, sum(area(b_i & w)) / sum(area(b_i)) (overlapping boxes count twice).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps
from skimage import data

Box = tuple[int, int, int, int]
"""(x0, y0, x1, y1) in pixels, x1 and y1 exclusive."""

ASPECTS: tuple[tuple[int, int], ...] = ((16, 9), (1, 1), (3, 4), (9, 16))
KEEP = 0.98

CATEGORIES = ("photo", "textured", "faces", "group", "product", "text")


# --- the metric -----------------------------------------------------------------------------


def window_size(width: int, height: int, aspect: tuple[int, int]) -> tuple[int, int]:
    """The largest window of `aspect` (w:h) inside a width x height image."""
    aw, ah = aspect
    if width * ah >= height * aw:  # the image is wider than the aspect: full height
        return max(1, min(width, round(height * aw / ah))), height
    return width, max(1, min(height, round(width * ah / aw)))


def area(box: Box) -> int:
    return max(0, box[2] - box[0]) * max(0, box[3] - box[1])


def coverage(boxes: list[Box], window: Box) -> float:
    """Share of the subjects' total area inside `window` (0..1)."""
    total = sum(area(b) for b in boxes)
    if total == 0:
        return 0.0
    inside = sum(
        area(
            (max(b[0], window[0]), max(b[1], window[1]), min(b[2], window[2]), min(b[3], window[3]))
        )
        for b in boxes
    )
    return inside / total


def _overlaps(lo: int, hi: int, size: int, positions: int) -> np.ndarray:
    """Length of [lo, hi) inside [p, p + size) for every integer start p < positions."""
    starts = np.arange(positions)
    return np.clip(np.minimum(starts + size, hi) - np.maximum(starts, lo), 0, None)


def best_coverage(
    boxes: list[Box], width: int, height: int, size: tuple[int, int]
) -> tuple[float, Box]:
    """The best coverage over every integer position of a window of `size`, and that window.

    Exhaustive and exact: a box's area inside the window is the product of its overlaps
    along x and along y, so the coverage of every position is a sum of outer products.
    """
    win_w, win_h = size
    nx, ny = width - win_w + 1, height - win_h + 1
    grid = np.zeros((ny, nx))
    for x0, y0, x1, y1 in boxes:
        grid += np.outer(_overlaps(y0, y1, win_h, ny), _overlaps(x0, x1, win_w, nx))
    total = sum(area(b) for b in boxes) or 1
    y, x = np.unravel_index(int(np.argmax(grid)), grid.shape)
    return float(grid[y, x]) / total, (int(x), int(y), int(x) + win_w, int(y) + win_h)


def is_kept(value: float, best: float) -> bool:
    return value >= KEEP * best - 1e-9


# --- the data set ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    name: str
    category: str
    image: Image.Image
    boxes: list[Box]


def _rgb(array: np.ndarray) -> Image.Image:
    if array.dtype != np.uint8:
        array = (np.clip(array, 0, 1) * 255).astype(np.uint8)
    return Image.fromarray(array).convert("RGB")


PHOTOS: dict[str, tuple[Callable[[], np.ndarray], list[Box]]] = {
    # Labelled by eye on a 50 px grid: the face with hair and chin; the cat's face (eyes to
    # mouth); the cup with its handle; the rocket; the motorcycle; the cameraman's head and
    # camera.
    "astronaut": (data.astronaut, [(155, 15, 300, 180)]),
    "chelsea": (data.chelsea, [(110, 50, 365, 290)]),
    "coffee": (data.coffee, [(172, 15, 425, 300)]),
    "rocket": (data.rocket, [(300, 125, 345, 410)]),
    "motorcycle": (lambda: data.stereo_motorcycle()[0], [(100, 90, 690, 450)]),
    "camera": (data.camera, [(150, 65, 335, 205)]),
}

CUTOUTS: dict[str, tuple[str, Box]] = {
    # Regions of the photos above pasted onto other backgrounds, with an oval soft mask.
    "astronaut-head": ("astronaut", (150, 8, 305, 188)),
    "astronaut-bust": ("astronaut", (60, 0, 400, 512)),
    "cat-face": ("chelsea", (100, 30, 375, 300)),
    "cup": ("coffee", (165, 10, 432, 305)),
    "rocket": ("rocket", (285, 115, 360, 427)),
    "motorcycle": ("motorcycle", (95, 85, 695, 455)),
    "cameraman-head": ("camera", (145, 60, 275, 210)),
}

SIZES = ((1600, 1000), (1200, 1100), (900, 1500), (1500, 1000), (1000, 1400), (1800, 900))


@cache
def photo(name: str) -> Image.Image:
    """One of the labelled photos (shared: copy before drawing on it)."""
    return _rgb(PHOTOS[name][0]())


def cutout(name: str, side: int, *, oval: bool = True) -> tuple[Image.Image, Image.Image]:
    """A subject cut from a photo, its longer side scaled to `side`, and its paste mask."""
    source, box = CUTOUTS[name]
    region = photo(source).crop(box)
    scale = side / max(region.size)
    width, height = max(1, round(region.width * scale)), max(1, round(region.height * scale))
    region = region.resize((width, height), Image.Resampling.BICUBIC)
    mask = Image.new("L", region.size, 0)
    if oval:
        ImageDraw.Draw(mask).ellipse((0, 0, width - 1, height - 1), fill=255)
        mask = mask.filter(ImageFilter.GaussianBlur(max(1, width // 60)))
    else:
        mask.paste(255, (0, 0, width, height))
    return region, mask


def _flip_box(box: Box, width: int) -> Box:
    return (width - box[2], box[1], width - box[0], box[3])


def _photos() -> Iterator[Sample]:
    """The labelled photos as they are, mirrored, and cut to 70 % of their width or height
    at one end (the subject off-centre), keeping the labelled boxes' visible part."""
    for name, (_, boxes) in PHOTOS.items():
        image = photo(name).copy()
        w, h = image.size
        yield Sample(f"{name}", "photo", image, boxes)
        yield Sample(
            f"{name}-mirrored",
            "photo",
            ImageOps.mirror(image),
            [_flip_box(b, w) for b in boxes],
        )
        cuts = {
            "left": (0, 0, round(w * 0.7), h),
            "right": (w - round(w * 0.7), 0, w, h),
            "top": (0, 0, w, round(h * 0.7)),
            "bottom": (0, h - round(h * 0.7), w, h),
        }
        for where, cut in cuts.items():
            kept = []
            for b in boxes:
                inside = (
                    max(b[0], cut[0]) - cut[0],
                    max(b[1], cut[1]) - cut[1],
                    min(b[2], cut[2]) - cut[0],
                    min(b[3], cut[3]) - cut[1],
                )
                if area(inside) >= 0.9 * area(b):
                    kept.append(inside)
            # Only cuts that keep the subject whole (90 %) and move it off-centre.
            centre_x = sum((b[0] + b[2]) / 2 for b in kept) / max(1, len(kept))
            centre_y = sum((b[1] + b[3]) / 2 for b in kept) / max(1, len(kept))
            cw, ch = cut[2] - cut[0], cut[3] - cut[1]
            off = abs(centre_x / cw - 0.5) > 0.12 or abs(centre_y / ch - 0.5) > 0.12
            if len(kept) == len(boxes) and off:
                yield Sample(f"{name}-{where}", "photo", image.crop(cut), kept)


def _tile(
    texture: np.ndarray, size: tuple[int, int], tint: tuple[float, float, float]
) -> Image.Image:
    grey = texture.astype(np.float32) / (255.0 if texture.dtype == np.uint8 else 1.0)
    if grey.ndim == 3:
        grey = grey.mean(axis=2)
    # Mirror-tiled (no seams), then coloured.
    tile = np.concatenate([grey, grey[:, ::-1]], axis=1)
    tile = np.concatenate([tile, tile[::-1]], axis=0)
    reps = (size[1] // tile.shape[0] + 1, size[0] // tile.shape[1] + 1)
    plane = np.tile(tile, reps)[: size[1], : size[0]]
    rgb = np.stack([plane * c for c in tint], axis=2)
    return _rgb(np.clip(rgb, 0, 1))


def star_field(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """Dark sky with stars of random brightness and size, and the Hubble deep field tiled
    faintly underneath."""
    sky = _tile(data.hubble_deep_field().mean(axis=2).astype(np.uint8), size, (0.5, 0.5, 0.6))
    draw = ImageDraw.Draw(sky)
    for _ in range(size[0] * size[1] // 900):
        x, y = int(rng.integers(0, size[0])), int(rng.integers(0, size[1]))
        r = float(rng.choice([0.5, 1, 1, 1.5, 2.5]))
        v = int(rng.integers(120, 256))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(v, v, min(255, v + 20)))
    return sky


def background(kind: str, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    if kind == "grass":
        return _tile(data.grass(), size, (0.45, 0.85, 0.35))
    if kind == "gravel":
        return _tile(data.gravel(), size, (0.8, 0.75, 0.65))
    if kind == "brick":
        return _tile(data.brick(), size, (0.95, 0.55, 0.4))
    return star_field(size, rng)


def _place(
    canvas: Image.Image,
    subjects: list[tuple[Image.Image, Image.Image]],
    rng: np.random.Generator,
) -> list[Box]:
    """Paste each (image, mask) at a random position not overlapping the ones before."""
    boxes: list[Box] = []
    for image, mask in subjects:
        for _ in range(200):
            x = int(rng.integers(0, canvas.width - image.width + 1))
            y = int(rng.integers(0, canvas.height - image.height + 1))
            box = (x, y, x + image.width, y + image.height)
            if all(area(_intersection(box, other)) == 0 for other in boxes):
                break
        canvas.paste(image, (x, y), mask)
        boxes.append(box)
    return boxes


def _intersection(a: Box, b: Box) -> Box:
    return (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))


def _textured() -> Iterator[Sample]:
    """Cut-out subjects at random known positions on grass, gravel, brick and a star field."""
    rng = np.random.default_rng(12)
    names = ["cat-face", "cup", "astronaut-bust", "motorcycle", "rocket", "cameraman-head"]
    for index in range(24):
        kind = ("grass", "gravel", "brick", "stars")[index % 4]
        size = SIZES[index % len(SIZES)]
        canvas = background(kind, size, rng)
        count = 1 if index % 3 else 2
        subjects = []
        for k in range(count):
            name = names[(index + 2 * k) % len(names)]
            share = float(rng.uniform(0.18, 0.4)) / count**0.5
            subjects.append(cutout(name, max(40, round(share * min(size))), oval=True))
        boxes = _place(canvas, subjects, rng)
        yield Sample(f"textured-{index:02d}-{kind}", "textured", canvas, boxes)


def _blurred(name: str, size: tuple[int, int]) -> Image.Image:
    """A photo as an out-of-focus backdrop."""
    small = ImageOps.fit(photo(name), (size[0] // 4, size[1] // 4))
    return small.filter(ImageFilter.GaussianBlur(3)).resize(size, Image.Resampling.BICUBIC)


def _faces() -> Iterator[Sample]:
    """One to four faces at different sizes (down to ~5 % of the image width) on blurred
    photos and textures; the boxes are the heads."""
    rng = np.random.default_rng(21)
    heads = ["astronaut-head", "cameraman-head"]
    backdrops = ["coffee", "motorcycle", "rocket", "grass", "brick", "chelsea"]
    for index in range(16):
        size = SIZES[(index + 1) % len(SIZES)]
        backdrop = backdrops[index % len(backdrops)]
        canvas = (
            background(backdrop, size, rng)
            if backdrop in ("grass", "brick")
            else _blurred(backdrop, size)
        )
        count = 1 + index % 4
        subjects = []
        for k in range(count):
            share = (
                float(rng.uniform(0.05, 0.10))
                if (index + k) % 3 == 0
                else float(rng.uniform(0.1, 0.28))
            )
            head, mask = cutout(heads[(index + k) % 2], max(24, round(share * size[0])))
            if (index + k) % 2:
                head, mask = ImageOps.mirror(head), ImageOps.mirror(mask)
            subjects.append((head, mask))
        boxes = _place(canvas, subjects, rng)
        yield Sample(f"faces-{index:02d}-{count}", "faces", canvas, boxes)


def _group() -> Iterator[Sample]:
    """Wide group shots: three to seven people (astronaut busts) in a row, the row centred
    or off to one side; the boxes are the heads."""
    rng = np.random.default_rng(33)
    head = (95, 15, 240, 180)  # the labelled head inside the astronaut-bust cut-out
    x0, y0, x1, y1 = CUTOUTS["astronaut-bust"][1]
    bust_w0, bust_h0 = x1 - x0, y1 - y0
    sizes = ((2400, 900), (2000, 800), (1800, 1000), (2400, 1200), (1600, 1000))
    for index in range(10):
        size = sizes[index % len(sizes)]
        people = 3 + index % 5
        canvas = (background("brick", size, rng) if index % 2 else _blurred("coffee", size)).copy()
        row_share = float(rng.uniform(0.55, 0.95))
        bust_w = round(row_share * size[0] / people)
        bust_w = min(bust_w, round(0.9 * size[1] * bust_w0 / bust_h0))
        start = {0: (size[0] - bust_w * people) // 2, 1: 0, 2: size[0] - bust_w * people}[index % 3]
        boxes = []
        for p in range(people):
            bust, _ = cutout("astronaut-bust", round(bust_w * bust_h0 / bust_w0), oval=False)
            scale = bust.width / bust_w0
            if p % 2:
                bust = ImageOps.mirror(bust)
            # Each person a little different: colour cast and height.
            tint = np.array([1.0, 0.9 + 0.05 * (p % 3), 0.85 + 0.07 * (p % 4)])
            bust = _rgb(np.clip(np.asarray(bust) / 255.0 * tint, 0, 1))
            x = start + p * bust_w
            y = size[1] - bust.height + int(rng.integers(0, max(1, bust.height // 6)))
            canvas.paste(bust, (x, y))
            hx0, hy0, hx1, hy1 = (round(v * scale) for v in head)
            if p % 2:
                hx0, hx1 = bust.width - hx1, bust.width - hx0
            boxes.append((x + hx0, max(0, y + hy0), x + hx1, min(size[1], y + hy1)))
        yield Sample(f"group-{index:02d}-{people}", "group", canvas, boxes)


def _bottle(width: int, rng: np.random.Generator) -> tuple[Image.Image, Image.Image]:
    """A drawn product: a bottle with a label, shaded."""
    height = width * 3
    image = Image.new("RGB", (width, height))
    mask = Image.new("L", (width, height), 0)
    colour = tuple(int(c) for c in rng.integers(30, 200, 3))
    for target in (image, mask):
        draw = ImageDraw.Draw(target)
        fill: tuple[int, ...] | int = colour if target is image else 255
        draw.rounded_rectangle(
            (0, height // 4, width - 1, height - 1), radius=width // 5, fill=fill
        )
        draw.rectangle((width // 3, 0, width - width // 3, height // 4 + 2), fill=fill)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, height // 2, width - 1, height // 2 + height // 5), fill=(240, 235, 220))
    font = ImageFont.load_default(size=max(8, width // 5))
    draw.text((width // 8, height // 2 + height // 20), "BRAND", fill=(20, 20, 20), font=font)
    shade = np.linspace(1.0, 0.6, width)[None, :, None]
    image = _rgb(np.asarray(image) / 255.0 * shade)
    return image, mask


def _product() -> Iterator[Sample]:
    """One or two products (the cup, a drawn bottle, scikit-image's logo) on plain white,
    grey or pastel backgrounds with a soft shadow, off-centre."""
    rng = np.random.default_rng(44)
    plains = [(255, 255, 255), (235, 235, 235), (250, 235, 220), (225, 240, 250)]
    logo = Image.fromarray(data.logo())
    for index in range(14):
        size = SIZES[(index + 2) % len(SIZES)]
        canvas = Image.new("RGB", size, plains[index % len(plains)])
        count = 1 if index % 4 else 2
        subjects = []
        for k in range(count):
            kind = (index + k) % 3
            width = round(float(rng.uniform(0.2, 0.4)) * min(size) / count**0.5)
            if kind == 0:
                subjects.append(cutout("cup", width))
            elif kind == 1:
                subjects.append(_bottle(max(20, width // 2), rng))
            else:
                resized = logo.resize((width, width), Image.Resampling.BICUBIC)
                subjects.append((resized.convert("RGB"), resized.getchannel("A")))
        # A soft shadow under each product, then the products.
        boxes = _place(canvas, subjects, rng)
        shadow = Image.new("L", (size[0] // 4, size[1] // 4), 0)
        for x0, _y0, x1, y1 in boxes:
            oval = (x0, y1 - (x1 - x0) // 10, x1, y1 + (x1 - x0) // 12)
            ImageDraw.Draw(shadow).ellipse([v // 4 for v in oval], 90)
        shadow = shadow.filter(ImageFilter.GaussianBlur(2)).resize(size, Image.Resampling.BICUBIC)
        canvas.paste((60, 60, 60), (0, 0), shadow)
        for (image, mask), box in zip(subjects, boxes, strict=True):
            canvas.paste(image, box[:2], mask)
        yield Sample(f"product-{index:02d}-{count}", "product", canvas, boxes)


WORDS = [
    "the",
    "of",
    "crop",
    "subject",
    "window",
    "image",
    "light",
    "night",
    "morning",
    "river",
    "city",
    "winter",
    "story",
]


def _poster(index: int, rng: np.random.Generator) -> Sample:
    """A page of small body text with one large headline somewhere: the headline is the
    subject."""
    size = SIZES[index % len(SIZES)]
    page = Image.new("RGB", size, (252, 250, 245))
    draw = ImageDraw.Draw(page)
    body_size = max(10, size[0] // 70)
    body = ImageFont.load_default(size=body_size)
    for y in range(40, size[1] - 40, max(14, size[0] // 45)):
        line = " ".join(str(rng.choice(WORDS)) for _ in range(size[0] // body_size // 3))
        draw.text((40, y), line, fill=(120, 120, 120), font=body)
    big = ImageFont.load_default(size=max(24, size[0] // 11))
    title = " ".join(str(rng.choice(WORDS)).upper() for _ in range(2))
    left, top, right, bottom = (int(v) for v in draw.textbbox((0, 0), title, font=big))
    tw, th = right - left, bottom - top
    x = int(rng.integers(20, max(21, size[0] - tw - 20)))
    y = int(rng.integers(20, max(21, size[1] - th - 20)))
    pad = th // 4
    draw.rectangle((x - pad, y - pad, x + tw + pad, y + th + pad), fill=(252, 250, 245))
    draw.text((x - left, y - top), title, fill=(10, 10, 60), font=big)
    return Sample(f"text-poster-{index:02d}", "text", page, [(x, y, x + tw, y + th)])


def _line_art(index: int, rng: np.random.Generator) -> Sample:
    """scikit-image's horse (outline or silhouette) or an inked photo cut-out, on a white
    page with lines of text around it: the drawing is the subject."""
    size = SIZES[(index + 3) % len(SIZES)]
    page = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(page)
    font_size = max(10, size[0] // 60)
    font = ImageFont.load_default(size=font_size)
    for y in range(30, size[1] - 30, max(14, size[0] // 40)):
        line = " ".join(str(rng.choice(WORDS)) for _ in range(size[0] // font_size // 3))
        draw.text((30, y), line, fill=0, font=font)
    width = round(float(rng.uniform(0.3, 0.55)) * min(size))
    if index % 3 == 2:
        region, _ = cutout("astronaut-head" if index % 2 else "cat-face", width, oval=False)
        grey = region.convert("L")
        ink = np.asarray(grey.filter(ImageFilter.FIND_EDGES)) > 30
        drawing = np.where(ink | (np.asarray(grey) < 60), 0, 255).astype(np.uint8)
    else:
        horse = data.horse()  # True is the background
        shape = (
            horse
            if index % 3 == 0
            else ~np.asarray(Image.fromarray(~horse).filter(ImageFilter.FIND_EDGES)).astype(bool)
        )
        art = Image.fromarray(np.where(shape, 255, 0).astype(np.uint8))
        drawing = np.asarray(art.resize((width, round(width * art.height / art.width))))
    art = Image.fromarray(drawing)
    x = int(rng.integers(0, size[0] - art.width + 1))
    y = int(rng.integers(0, size[1] - art.height + 1))
    page.paste((255, 255, 255), (x, y, x + art.width, y + art.height))
    page.paste(art.convert("RGB"), (x, y))
    inked = np.argwhere(np.asarray(art) < 128)
    (y0, x0), (y1, x1) = inked.min(axis=0), inked.max(axis=0)
    return Sample(
        f"text-lineart-{index:02d}",
        "text",
        page,
        [(x + int(x0), y + int(y0), x + int(x1) + 1, y + int(y1) + 1)],
    )


def _text() -> Iterator[Sample]:
    rng = np.random.default_rng(55)
    for index in range(7):
        yield _poster(index, rng)
        yield _line_art(index, rng)


def samples() -> Iterator[Sample]:
    """The whole data set, built one image at a time (about a hundred, 0.3-2.9 MP)."""
    yield from _photos()
    yield from _textured()
    yield from _faces()
    yield from _group()
    yield from _product()
    yield from _text()
