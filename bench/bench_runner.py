"""Runner speed and memory against smartcrop.py, libvips and a naive Pillow pipeline, in one run.

Each case runs in its own process pinned to one core, so its peak RSS is its own:
    .venv/bin/python bench/bench_runner.py [--repeat 7]
Prints a markdown table: median ms, peak RSS, and the ratio to smartthumb in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"


def make_inputs(directory: Path) -> dict[str, list[Path]]:
    """A 12 MP photo and 20 comic-sized pages (1600x2400), as JPEGs."""
    sys.path.insert(0, str(TESTS))
    from images import art_page, photo, text_page

    photo_path = directory / "photo-12mp.jpg"
    photo("astronaut").resize((4000, 3000)).save(photo_path, quality=90)
    names = ["astronaut", "coffee", "chelsea", "rocket", "camera"]
    pages = []
    for index in range(20):
        page = (
            text_page((1600, 2400))
            if index % 7 == 3
            else art_page(names[index % len(names)], (1600, 2400))
        )
        path = directory / f"page-{index:02d}.jpg"
        page.save(path, quality=88)
        pages.append(path)
    return {"photo": [photo_path], "pages": pages}


# Each case is the body of a function run(inputs, out) executed in a fresh process.
CASES: dict[str, dict[str, str]] = {
    "crop 12 MP -> 1200x675": {
        "smartthumb": """
from smartthumb.runner.pipeline import make_thumbnail
from smartthumb.runner.spec import ThumbnailSpec
spec = ThumbnailSpec(mode="crop", width=1200, height=675)
def run(inputs, out):
    make_thumbnail(inputs, spec, out)
""",
        "smartcrop.py": """
from PIL import Image
from smartcrop import SmartCrop
cropper = SmartCrop()
def run(inputs, out):
    image = Image.open(inputs[0]).convert("RGB")
    box = cropper.crop(image, 1200, 675)["top_crop"]
    region = image.crop((box["x"], box["y"], box["x"] + box["width"], box["y"] + box["height"]))
    region.resize((1200, 675), Image.Resampling.LANCZOS).save(out, quality=82)
""",
        "libvips attention": """
import pyvips
pyvips.cache_set_max(0)  # each repeat does the work again, as a fresh request would
def run(inputs, out):
    # thumbnail() shrinks on load (JPEG shrink-on-load), then crops by attention.
    thumb = pyvips.Image.thumbnail(inputs[0], 1200, height=675, crop="attention")
    thumb.write_to_file(out, Q=82)
""",
        "naive Pillow": """
from PIL import Image, ImageOps
def run(inputs, out):
    image = Image.open(inputs[0]).convert("RGB")
    ImageOps.fit(image, (1200, 675), Image.Resampling.LANCZOS).save(out, quality=82)
""",
    },
    "pair 20 pages 1600x2400": {
        "smartthumb": """
from smartthumb.runner.pipeline import make_thumbnail
from smartthumb.runner.spec import ThumbnailSpec
spec = ThumbnailSpec(mode="pair")
def run(inputs, out):
    make_thumbnail(inputs, spec, out)
""",
        "smartthumb --fallback": """
from smartthumb.runner.pipeline import make_thumbnail
from smartthumb.runner.spec import ThumbnailSpec
spec = ThumbnailSpec(mode="pair")
def run(inputs, out):
    make_thumbnail(inputs, spec, out, fallback=True, fallback_reason="bench")
""",
        "naive Pillow": """
from PIL import Image, ImageOps, ImageStat
def run(inputs, out):
    # Seed 000's shape: every page decoded at full size and held, scored, two composed.
    pages = [Image.open(path).convert("RGB") for path in inputs]
    scored = sorted(pages, key=lambda p: -sum(ImageStat.Stat(p.convert("L")).stddev))
    canvas = Image.new("RGB", (1200, 675))
    for x, page in zip((0, 603), scored[:2]):
        canvas.paste(ImageOps.fit(page, (597, 675), Image.Resampling.LANCZOS), (x, 0))
    canvas.save(out, quality=82)
""",
    },
}

TARGETS = {
    ("crop 12 MP -> 1200x675", "smartthumb"): "<= 100 ms, <= 200 MB",
    ("pair 20 pages 1600x2400", "smartthumb"): "<= 600 ms, <= 250 MB",
    ("pair 20 pages 1600x2400", "smartthumb --fallback"): "<= 120 MB",
}

HARNESS = """
import json, os, statistics, sys, time
os.sched_setaffinity(0, {{0}})
{body}
inputs = {inputs!r}
out = {out!r}
run(inputs, out)  # warm-up: imports, model load, first-call caches
times = []
for _ in range({repeat}):
    start = time.perf_counter()
    run(inputs, out)
    times.append((time.perf_counter() - start) * 1000)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec from the parent.
status = open("/proc/self/status").read().split("VmHWM:")[1]
peak = int(status.split()[0]) / 1024
print(json.dumps({{"median_ms": statistics.median(times), "peak_rss_mb": peak}}))
"""


def measure(body: str, inputs: list[Path], out: Path, repeat: int) -> dict[str, float]:
    script = HARNESS.format(body=body, inputs=[str(p) for p in inputs], out=str(out), repeat=repeat)
    # One thread each for the native libraries: the target is "one core".
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", VIPS_CONCURRENCY="1")
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        inputs = make_inputs(Path(scratch))
        rows = []
        for case, implementations in CASES.items():
            data = inputs["photo"] if case.startswith("crop") else inputs["pages"]
            results = {}
            for name, body in implementations.items():
                repeat = 3 if name == "smartcrop.py" else args.repeat
                results[name] = measure(body, data, Path(scratch) / "out.jpg", repeat)
            base = results["smartthumb"]
            for name, figures in results.items():
                rows.append(
                    (
                        case,
                        name,
                        figures["median_ms"],
                        figures["peak_rss_mb"],
                        figures["median_ms"] / base["median_ms"],
                        TARGETS.get((case, name), ""),
                    )
                )
    print(
        f"one core, {os.cpu_count()} on the machine, Python {sys.version.split()[0]}, "
        f"{time.strftime('%Y-%m-%d')}\n"
    )
    print("| case | implementation | median ms | peak RSS MB | time vs smartthumb | target |")
    print("|---|---|---:|---:|---:|---|")
    for case, name, median, rss, ratio, target in rows:
        print(f"| {case} | {name} | {median:.1f} | {rss:.0f} | {ratio:.2f}x | {target} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
