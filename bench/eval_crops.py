"""Smart-crop evaluation: kept % per method and category on labelled subject boxes (#12).

    make eval            (or .venv/bin/python bench/eval_crops.py [--verbose] [--only NAME])

About a hundred images built at run time by tests/cropeval.py (scikit-image's bundled photos
with hand-labelled boxes, cut-outs on textures, faces, group shots, products, text and line
art), each cropped at the four aspects 16:9, 1:1, 3:4 and 9:16 by every method in the same
run. For each aspect the window is the largest one of that aspect at native scale; a crop is
*kept* when it covers at least 98 % of the best coverage any position of that window reaches
(coverage: the share of the subjects' total area inside the window). Windows that are the
whole image (the image already has that aspect) are left out: every method keeps them.

Prints a markdown table (kept % per method x category, and overall), the misses with
--verbose, and writes every crop to bench/out/eval_crops.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import cropeval
from cropeval import ASPECTS, CATEGORIES, Box

Method = Callable[[Path, tuple[int, int]], tuple[Box, str | None]]
"""(image file, window size) -> the window it chose, and what decided it where it says."""


def centre(path: Path, size: tuple[int, int]) -> tuple[Box, str | None]:
    with Image.open(path) as image:
        width, height = image.size
    x, y = (width - size[0]) // 2, (height - size[1]) // 2
    return (x, y, x + size[0], y + size[1]), None


def smartcrop_py() -> Method:
    from smartcrop import SmartCrop

    cropper = SmartCrop()

    def run(path: Path, size: tuple[int, int]) -> tuple[Box, str | None]:
        image = Image.open(path).convert("RGB")
        # min_scale=1: the largest window of the aspect (its default also tries 90 %).
        box = cropper.crop(image, size[0], size[1], min_scale=1.0)["top_crop"]
        return (box["x"], box["y"], box["x"] + box["width"], box["y"] + box["height"]), None

    return run


def vips_attention() -> Method:
    import pyvips

    def run(path: Path, size: tuple[int, int]) -> tuple[Box, str | None]:
        image = pyvips.Image.new_from_file(str(path), access="random")
        crop = image.smartcrop(size[0], size[1], interesting="attention")
        # The crop is an exact sub-image; libvips records its origin as minus the offset.
        x, y = -crop.get("xoffset"), -crop.get("yoffset")
        box = (x, y, x + crop.width, y + crop.height)
        if not np.array_equal(crop.numpy(), image.numpy()[box[1] : box[3], box[0] : box[2]]):
            raise AssertionError(f"libvips' crop of {path} is not at {box}")
        return box, None

    return run


def smartthumb(out: Path) -> Method:
    """As users run it: mode crop at the window's size; the box is the one it reports."""
    from smartthumb.runner.pipeline import make_thumbnail
    from smartthumb.runner.spec import ThumbnailSpec

    def run(path: Path, size: tuple[int, int]) -> tuple[Box, str | None]:
        spec = ThumbnailSpec(mode="crop", width=size[0], height=size[1])
        result = make_thumbnail([path], spec, out)
        crop = result.inputs[0].crop
        assert crop is not None
        return (crop.x, crop.y, crop.x + crop.width, crop.y + crop.height), result.method

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true", help="list every miss")
    parser.add_argument("--only", help="only the samples whose name contains this")
    parser.add_argument("--methods", help="comma-separated: only these methods (default: all)")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "out" / "eval_crops.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        methods: dict[str, Method] = {
            "centre": centre,
            "smartcrop.py": smartcrop_py(),
            "libvips attention": vips_attention(),
            "smartthumb": smartthumb(work / "thumb.jpg"),
        }
        if args.methods:
            wanted = {name.strip() for name in args.methods.split(",")}
            methods = {name: method for name, method in methods.items() if name in wanted}
        records = []
        seconds = dict.fromkeys(methods, 0.0)
        trivial = 0
        started = time.perf_counter()
        for sample in cropeval.samples():
            if args.only and args.only not in sample.name:
                continue
            path = work / f"{sample.name}.jpg"
            sample.image.save(path, quality=92)
            width, height = sample.image.size
            for aspect in ASPECTS:
                size = cropeval.window_size(width, height, aspect)
                if size == (width, height):
                    trivial += 1
                    continue
                best, best_box = cropeval.best_coverage(sample.boxes, width, height, size)
                record = {
                    "image": sample.name,
                    "category": sample.category,
                    "size": [width, height],
                    "aspect": f"{aspect[0]}:{aspect[1]}",
                    "boxes": sample.boxes,
                    "best": round(best, 4),
                    "best_window": best_box,
                    "methods": {},
                }
                for name, method in methods.items():
                    start = time.perf_counter()
                    box, decided_by = method(path, size)
                    seconds[name] += time.perf_counter() - start
                    value = cropeval.coverage(sample.boxes, box)
                    record["methods"][name] = {
                        "window": box,
                        "coverage": round(value, 4),
                        "kept": cropeval.is_kept(value, best),
                        "decided_by": decided_by,
                    }
                records.append(record)
            path.unlink()
        elapsed = time.perf_counter() - started

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(records, indent=1))
    print(
        f"{len({r['image'] for r in records})} images, {len(records)} crops "
        f"({trivial} whole-image windows left out), {elapsed:.0f} s, "
        f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}\n"
    )
    categories = [c for c in CATEGORIES if any(r["category"] == c for r in records)]
    header = " | ".join(f"{c} ({sum(r['category'] == c for r in records)})" for c in categories)
    print(f"| method | {header} | overall ({len(records)}) |")
    print("|---|" + "---:|" * (len(categories) + 1))
    for name in methods:
        cells = []
        for category in [*categories, None]:
            rows = [r for r in records if category is None or r["category"] == category]
            kept = sum(r["methods"][name]["kept"] for r in rows)
            cells.append(f"{100 * kept / len(rows):.0f}")
        print(f"| {name} | {' | '.join(cells)} |")
    decided = Counter(r["methods"].get("smartthumb", {}).get("decided_by") for r in records)
    print(
        "\nsmartthumb decided by: "
        + ", ".join(f"{by} {count}" for by, count in sorted(decided.items()))
        + "; seconds per method: "
        + ", ".join(f"{name} {spent:.0f}" for name, spent in seconds.items())
    )
    if args.verbose:
        for name in methods:
            misses = [r for r in records if not r["methods"][name]["kept"]]
            print(f"\n{name}: {len(misses)} misses (image, aspect, coverage / best)")
            for r in misses:
                got = r["methods"][name]
                by = f"  ({got['decided_by']})" if got["decided_by"] else ""
                print(
                    f"  {r['image']:24} {r['aspect']:5} {got['coverage']:.2f} / {r['best']:.2f}{by}"
                )
    print(f"\nevery crop: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
