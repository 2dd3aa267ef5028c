"""The runner's CLI contract, run as a real process: exit codes, one-line errors, JSON out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from images import photo, save_photo, write_pages
from PIL import Image
from smartthumb.operator.kube.resource import Resources, quantity_bytes
from smartthumb.operator.local.settings import EngineSettings
from smartthumb.runner.encode import max_output_pixels
from smartthumb.runner.limits import DEFAULT_MAX_PIXELS, MiB
from smartthumb.runner.spec import OutputFormat, ThumbnailSpec
from smartthumb.runner.termination import TERMINATION_MESSAGE_LIMIT


def run_cli(
    *args: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "smartthumb.runner", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,  # the tests assert on the exit code
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, needle: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("smartthumb: error:")
    assert needle.lower() in lines[0].lower(), lines[0]
    assert result.stdout == ""


def test_success_prints_the_result_json_and_writes_the_termination_message(tmp_path: Path) -> None:
    source = save_photo(tmp_path, "astronaut")
    out = tmp_path / "out" / "thumb.webp"
    log = tmp_path / "termination-log"
    result = run_cli(
        "crop",
        "--mode",
        "crop",
        "--width",
        "300",
        "--height",
        "300",
        "--format",
        "webp",
        "-o",
        out,
        "--termination-log",
        log,
        source,
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["mode"] == "crop" and document["output"]["format"] == "webp"
    assert document["method"] == "crop:face"
    assert set(document["timings_ms"]) >= {"decode", "analyse", "encode", "total"}
    assert Image.open(out).size == (300, 300)
    assert json.loads(log.read_text())["output"] == document["output"]


def test_a_reader_that_left_gets_one_line_not_a_traceback(tmp_path: Path) -> None:
    # `smartthumb crop ... | head -c 0`: standard output is a pipe nobody reads any more.
    read_end, write_end = os.pipe()
    os.close(read_end)
    out = tmp_path / "thumb.jpg"
    args = ["crop", "--mode", "fit", "--width", "50", "-o", out, save_photo(tmp_path, "coffee")]
    try:
        result = subprocess.run(
            [sys.executable, "-m", "smartthumb.runner", *map(str, args)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            check=False,  # the exit code is asserted on
        )
    finally:
        os.close(write_end)
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines() == [
        "smartthumb: error: standard output closed before the result could be written"
    ]
    assert Image.open(out).width == 50, "the thumbnail itself was made"


def test_reading_order_flag_reaches_the_pair(tmp_path: Path) -> None:
    pages = [save_photo(tmp_path, name) for name in ("chelsea", "coffee")]
    flags = ("--mode", "pair", "--skip-edges", "0", "--format", "png")
    outputs = {}
    for order in ("ltr", "rtl"):
        out = tmp_path / f"{order}.png"
        result = run_cli("crop", *flags, "--reading-order", order, "-o", out, *pages)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["selected"] == [0, 1]
        outputs[order] = np.asarray(Image.open(out).convert("RGB"))
    # The same two panels, swapped (panel widths differ by at most a pixel).
    width = outputs["ltr"].shape[1]
    assert (
        abs(
            float(outputs["ltr"][:, : width // 3].mean())
            - float(outputs["rtl"][:, -width // 3 :].mean())
        )
        < 2.0
    )
    assert not np.array_equal(outputs["ltr"], outputs["rtl"])


def test_every_spec_field_is_a_flag_documented_by_the_model() -> None:
    result = run_cli("crop", "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # argparse wraps the help
    for name, field in ThumbnailSpec.model_fields.items():
        assert f"--{name.replace('_', '-')}" in text, name
        assert " ".join(str(field.description).split()) in text, name


@pytest.mark.parametrize(
    ("output", "flags", "expected"),
    [
        ("t.png", [], "PNG"),  # the extension names the format
        ("t.WEBP", [], "WEBP"),
        ("t.webp", ["--format", "jpeg"], "JPEG"),  # a flag given wins
        ("t.thumb", [], "JPEG"),  # an extension that is no format: the model's default
    ],
)
def test_the_output_extension_is_the_format_unless_one_is_given(
    tmp_path: Path, good_jpeg: Path, output: str, flags: list[str], expected: str
) -> None:
    out = tmp_path / output
    result = run_cli("crop", "--mode", "fit", "--width", "40", *flags, "-o", out, good_jpeg)
    assert result.returncode == 0, result.stderr
    assert Image.open(out).format == expected
    assert json.loads(result.stdout)["output"]["format"] == expected.lower()


def test_boolean_flags_take_a_no_form(tmp_path: Path, good_jpeg: Path) -> None:
    out = tmp_path / "t.jpg"
    result = run_cli(
        "crop", "--mode", "fit", "--width", "40", "--no-grayscale", "-o", out, good_jpeg
    )
    assert result.returncode == 0, result.stderr
    assert Image.open(out).mode == "RGB"
    result = run_cli("crop", "--mode", "fit", "--width", "40", "--grayscale", "-o", out, good_jpeg)
    assert result.returncode == 0, result.stderr
    assert Image.open(out).mode == "L"


def test_spec_json_is_accepted_whole(tmp_path: Path) -> None:
    source = save_photo(tmp_path, "coffee")
    spec = json.dumps({"mode": "fit", "width": 512, "grayscale": True, "quality": 80})
    result = run_cli("crop", "--spec", spec, "-o", tmp_path / "t.jpg", source)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["output"]["width"] == 512
    assert Image.open(tmp_path / "t.jpg").mode == "L"


def test_termination_message_fits_in_4_kib_for_many_pages(tmp_path: Path) -> None:
    page = photo("coffee").resize((120, 180))
    pages = write_pages(tmp_path, [page] * 60)
    log = tmp_path / "termination-log"
    result = run_cli(
        "crop", "--fallback", "-o", tmp_path / "p.jpg", "--termination-log", log, *pages
    )
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["inputs"]) == 60
    message = log.read_bytes()
    assert len(message) <= TERMINATION_MESSAGE_LIMIT
    compacted = json.loads(message)
    assert compacted["fallback_used"] is True and compacted["output"]["width"] == 1200
    assert {entry["index"] for entry in compacted.get("inputs", [])} <= set(compacted["selected"])


def test_fallback_never_imports_opencv(tmp_path: Path) -> None:
    source = save_photo(tmp_path, "astronaut")
    code = (
        "import sys; from smartthumb.runner.cli import main; "
        f"rc = main(['crop', '--fallback', '--mode', 'crop', '--width', '100', '--height', "
        f"'100', '-o', {str(tmp_path / 'f.jpg')!r}, {str(source)!r}]); "
        "assert rc == 0; assert 'cv2' not in sys.modules, 'fallback imported OpenCV'"
    )
    result = subprocess.run(  # check=False: the exit code is asserted on
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


def _png_bomb(path: Path, width: int, height: int) -> None:
    """A tiny file that declares a huge 1-bit image (the classic PNG decompression bomb)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")
        )

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])
    rows = zlib.compress(b"\x00" * ((width + 7) // 8 + 1) * height, 9)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


@pytest.fixture
def good_jpeg(tmp_path: Path) -> Path:
    return save_photo(tmp_path, "chelsea")


def bad_inputs(tmp_path: Path, good: Path) -> dict[str, tuple[Path, str]]:
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("this is not an image\n" * 20)
    unsupported = tmp_path / "picture.tga"
    photo("chelsea").save(unsupported, "TGA")
    bomb = tmp_path / "bomb.png"
    _png_bomb(bomb, 10_000, 10_000)
    return {
        "corrupt": (corrupt, "corrupt"),
        "truncated": (truncated, "truncated"),
        "zero-byte": (empty, "not a supported image"),
        "non-image": (text, "not a supported image"),
        "unsupported format": (unsupported, "not a supported image"),
        "decompression bomb": (bomb, "decompression bomb"),
        "missing file": (tmp_path / "nope.jpg", "not found"),
        "directory": (tmp_path, "directory"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "corrupt",
        "truncated",
        "zero-byte",
        "non-image",
        "unsupported format",
        "decompression bomb",
        "missing file",
        "directory",
    ],
)
def test_bad_images_exit_2_with_one_line(tmp_path: Path, good_jpeg: Path, case: str) -> None:
    path, needle = bad_inputs(tmp_path, good_jpeg)[case]
    out = tmp_path / "out.jpg"
    result = run_cli("crop", "--mode", "fit", "--width", "100", "-o", out, path)
    assert_one_line_error(result, 2, needle)
    assert not out.exists(), "nothing half-written is left behind"


def test_bad_page_among_good_ones_names_the_file(tmp_path: Path, good_jpeg: Path) -> None:
    broken = tmp_path / "page-7.jpg"
    broken.write_bytes(good_jpeg.read_bytes()[:500])
    result = run_cli("crop", "-o", tmp_path / "o.jpg", good_jpeg, broken)
    assert_one_line_error(result, 2, "page-7.jpg")


def test_pixel_limit_is_configurable(tmp_path: Path, good_jpeg: Path) -> None:
    result = run_cli(
        "crop",
        "--mode",
        "fit",
        "--width",
        "100",
        "--max-pixels",
        "1000",
        "-o",
        tmp_path / "o.jpg",
        good_jpeg,
    )
    assert_one_line_error(result, 2, "above the limit")
    env = {"SMARTTHUMB_MAX_PIXELS": "1000", "PATH": "/usr/bin:/bin"}
    result = run_cli(
        "crop", "--mode", "fit", "--width", "100", "-o", tmp_path / "o.jpg", good_jpeg, env=env
    )
    assert_one_line_error(result, 2, "above the limit")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--mode", "resize", "--width", "0", "--height", "10"], "width"),
        (["--mode", "resize", "--width", "-5", "--height", "10"], "width"),
        (["--mode", "fit", "--width", "100000"], "width"),
        (["--mode", "resize", "--width", "100"], "needs both width and height"),
        (["--mode", "crop", "--width", "100"], "crop"),
        (["--mode", "sideways"], "invalid choice"),
        (["--width", "abc"], "invalid int"),
        (["--quality", "0"], "quality"),
        (["--spec", '{"mode": "fit", "width": 10, "colour": "red"}'], "colour"),
        (["--spec", "{not json"], "invalid"),
        (["--max-pixels", "0"], "max-pixels"),
        (["--reading-order", "up"], "invalid choice"),
        (["--spec", '{"mode": "fit", "width": 10}', "--width", "20"], "--width inside it"),
    ],
)
def test_bad_requests_exit_2_with_one_line(
    tmp_path: Path, good_jpeg: Path, args: list[str], needle: str
) -> None:
    result = run_cli("crop", *args, "-o", tmp_path / "o.jpg", good_jpeg)
    assert_one_line_error(result, 2, needle)


def test_several_inputs_for_a_single_image_mode_is_refused(tmp_path: Path, good_jpeg: Path) -> None:
    result = run_cli(
        "crop", "--mode", "fit", "--width", "10", "-o", tmp_path / "o.jpg", good_jpeg, good_jpeg
    )
    assert_one_line_error(result, 2, "exactly one input")


def test_unknown_command_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("sharpen", tmp_path)
    assert_one_line_error(result, 2, "invalid choice")


def test_internal_errors_exit_1_with_one_line(tmp_path: Path, good_jpeg: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = run_cli("crop", "--mode", "fit", "--width", "50", "-o", blocker / "out.jpg", good_jpeg)
    assert_one_line_error(result, 1, "internal error")


def test_a_native_allocation_failure_counts_as_out_of_memory(
    tmp_path: Path, good_jpeg: Path
) -> None:
    # A real address-space limit: OpenCV cannot map its shared libraries, or its allocator
    # fails; either way the runner must say "out of memory" (exit 3) so the fallback runs.
    code = (
        "import resource, sys\n"
        "from smartthumb.runner.cli import main\n"
        "limit = 200 * 1024 * 1024\n"
        "resource.setrlimit(resource.RLIMIT_AS, (limit, limit))\n"
        "sys.exit(main(['crop', '--mode', 'crop', '--width', '100', '--height', '100', "
        f"'-o', {str(tmp_path / 'o.jpg')!r}, {str(good_jpeg)!r}]))\n"
    )
    result = subprocess.run(  # check=False: the exit code is asserted on
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert_one_line_error(result, 3, "out of memory")


def test_without_opencv_the_smart_modes_still_work_on_edges(tmp_path: Path) -> None:
    # The light image installs the runner without its `smart` extra: no cv2 at all.
    source = save_photo(tmp_path, "astronaut")
    code = (
        "import sys; sys.modules['cv2'] = None\n"
        "from smartthumb.runner.cli import main\n"
        f"raise SystemExit(main(['crop', '--mode', 'crop', '--width', '100', '--height', '200', "
        f"'-o', {str(tmp_path / 'o.jpg')!r}, {str(source)!r}]))\n"
    )
    result = subprocess.run(  # check=False: the exit code is asserted on
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["method"] == "crop:edges-no-opencv"
    assert Image.open(tmp_path / "o.jpg").size == (100, 200)


@pytest.mark.parametrize(
    ("fmt", "width", "height"),
    [
        (OutputFormat.avif, 3162, 3162),
        (OutputFormat.webp, 5000, 5000),
        (OutputFormat.jpeg, 8192, 6103),
    ],
    ids=["avif", "webp", "jpeg"],
)
def test_the_largest_output_of_each_format_fits_the_default_memory_limits(
    tmp_path: Path, fmt: OutputFormat, width: int, height: int
) -> None:
    """Under the local engine's address-space limit, and within the runner pod's memory
    limit: the run's own peak RSS (VmHWM: a child's ru_maxrss starts at its parent's)."""
    limit = max_output_pixels(fmt, DEFAULT_MAX_PIXELS)
    assert width * height <= limit < width * (height + 1)  # the largest allowed
    address_space = EngineSettings().memory_limit_mb * MiB
    code = (
        "import resource, sys\n"
        "from smartthumb.runner.cli import main\n"
        f"resource.setrlimit(resource.RLIMIT_AS, ({address_space}, {address_space}))\n"
        "code = main(sys.argv[1:])\n"
        "print(next(line for line in open('/proc/self/status') if 'VmHWM' in line).strip())\n"
        "sys.exit(code)\n"
    )
    out = tmp_path / f"o.{fmt.extension}"
    args = ["--mode", "crop", "--upscale", "--format", fmt.value, "-o", str(out)]
    source = str(save_photo(tmp_path, "astronaut"))
    made = subprocess.run(
        [sys.executable, "-c", code, "crop", *args, "--width", str(width),
         "--height", str(height), source],
        check=False, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    with Image.open(out) as image:
        assert image.size == (width, height)
    peak_kib = int(made.stdout.splitlines()[-1].split()[1])
    assert peak_kib * 1024 <= quantity_bytes(Resources().memory), f"{peak_kib} KiB"
    # One row more is refused before a pixel is decoded.
    result = run_cli("crop", *args, "--width", str(width), "--height", str(height + 1), source)
    assert_one_line_error(result, 2, f"above the limit of {limit / 1e6:.1f} MP for {fmt.value}")
