"""`smartthumb crop ...`: the contract the local engine and the Kubernetes Job both invoke.

Inputs and the output are file paths or http(s) URLs (fetched and uploaded through the SSRF
guard; see fetch.py and the SMARTTHUMB_* source settings in limits.py).

Prints the RunResult JSON on stdout. Exit codes: 0 done, 2 bad input or usage (one line on
stderr), 3 MemoryError, 1 anything else. A kernel OOM kill is seen by the caller as signal 9.
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import AbstractContextManager, nullcontext
from functools import cache
from pathlib import Path
from typing import Any, NoReturn

from pydantic import ValidationError
from smartthumb.runner.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_OUT_OF_MEMORY, RunnerError
from smartthumb.runner.limits import Limits, is_url
from smartthumb.runner.spec import Mode, OutputFormat, ReadingOrder, ThumbnailSpec
from smartthumb.runner.termination import write_termination_message


class _OneLineParser(argparse.ArgumentParser):
    """argparse prints usage plus the message; callers want a single line."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"smartthumb: error: {message}\n")


def _path_or_url(text: str) -> Path | str:
    """An http(s) URL stays text (fetch.py reaches it); anything else is a file path."""
    return text if is_url(text) else Path(text)


@cache  # a warm worker runs job after job: building it anew cost ~0.9 ms a run
def _build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="smartthumb", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)
    crop = commands.add_parser("crop", help="make one thumbnail from one or more images")
    crop.add_argument(
        "inputs", nargs="+", type=_path_or_url, help="input image files or URLs (pages in order)"
    )
    crop.add_argument(
        "-o",
        "--output",
        type=_path_or_url,
        required=True,
        help="where to write the image: a file, or an http(s) URL to PUT it to",
    )
    crop.add_argument("--spec", help="the whole ThumbnailSpec as JSON (overrides the flags below)")
    crop.add_argument("--mode", choices=[m.value for m in Mode], default=Mode.pair.value)
    crop.add_argument("--width", type=int)
    crop.add_argument("--height", type=int)
    crop.add_argument("--aspect", help="crop: W:H when width or height is missing")
    crop.add_argument("--format", choices=[f.value for f in OutputFormat], default="jpeg")
    crop.add_argument("--quality", type=int, default=82)
    crop.add_argument("--grayscale", action="store_true")
    crop.add_argument("--upscale", action="store_true", help="allow enlarging small sources")
    crop.add_argument("--skip-edges", type=int, default=2)
    crop.add_argument("--gap", type=int, default=5)
    crop.add_argument(
        "--reading-order",
        choices=[order.value for order in ReadingOrder],
        default=ReadingOrder.ltr.value,
        help="pair: rtl puts the earlier page on the right (manga)",
    )
    crop.add_argument(
        "--fallback", action="store_true", help="light composer: no detectors, tiny memory"
    )
    crop.add_argument("--fallback-reason", help="why the fallback runs (becomes worker_warning)")
    crop.add_argument(
        "--termination-log", type=Path, help="also write the result here (Kubernetes, <= 4 KiB)"
    )
    crop.add_argument("--max-pixels", type=int, help="refuse sources above this many pixels")
    return parser


def _remote(
    inputs: list[Path | str], output: Path | str, limits: Limits
) -> tuple[list[Any], Any, AbstractContextManager[object]]:
    """URL inputs and output as the pipeline's remote sources and upload, with the HTTP client
    they share; without URLs httpx is not even imported (the fallback must stay small under
    its memory limit)."""
    if all(isinstance(item, Path) for item in (*inputs, output)):
        return list(inputs), output, nullcontext()
    from smartthumb.runner.fetch import RemoteImage, RemoteOutput, Web

    web = Web(limits)
    return (
        [item if isinstance(item, Path) else RemoteImage(item, web) for item in inputs],
        output if isinstance(output, Path) else RemoteOutput(output, web),
        web,
    )


def _spec_from_args(args: argparse.Namespace) -> ThumbnailSpec:
    if args.spec:
        return ThumbnailSpec.model_validate_json(args.spec)
    return ThumbnailSpec(
        mode=args.mode,
        width=args.width,
        height=args.height,
        aspect=args.aspect,
        format=args.format,
        quality=args.quality,
        grayscale=args.grayscale,
        upscale=args.upscale,
        skip_edges=args.skip_edges,
        gap=args.gap,
        reading_order=args.reading_order,
    )


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "spec"
    return f"invalid {where}: {first['msg']}"


def _fail(code: int, message: str, termination_log: Path | None) -> int:
    print(f"smartthumb: error: {message}", file=sys.stderr)
    if termination_log is not None:
        write_termination_message(termination_log, {"error": message, "exit_code": code})
    return code


_OUT_OF_MEMORY_SIGNS = (
    "insufficient memory",
    "failed to allocate",
    "failed to map segment",
    "cannot allocate memory",
)


def _is_out_of_memory(error: Exception) -> bool:
    """Native libraries report a memory limit in their own words: OpenCV's cv2.error
    ("Insufficient memory", "Failed to allocate"), a lazy import that cannot map a shared
    library, numpy's "Unable to allocate" (a MemoryError subclass, caught before this)."""
    text = str(error).lower()
    return any(sign in text for sign in _OUT_OF_MEMORY_SIGNS)


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else ""


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    termination_log: Path | None = args.termination_log
    try:
        spec = _spec_from_args(args)
    except ValidationError as error:
        return _fail(EXIT_BAD_INPUT, _describe(error), termination_log)
    try:
        limits = Limits.from_env()
    except ValueError as error:
        return _fail(EXIT_BAD_INPUT, str(error), termination_log)
    if args.max_pixels is not None:
        if args.max_pixels <= 0:
            return _fail(EXIT_BAD_INPUT, "--max-pixels must be positive", termination_log)
        limits = limits.model_copy(update={"max_pixels": args.max_pixels})

    # Imported here so that `--help` and argument errors stay fast.
    from smartthumb.runner.pipeline import make_thumbnail

    try:
        inputs, output, web = _remote(args.inputs, args.output, limits)
        with web:
            result = make_thumbnail(
                inputs,
                spec,
                output,
                fallback=args.fallback,
                fallback_reason=args.fallback_reason,
                limits=limits,
            )
    except RunnerError as error:
        return _fail(error.exit_code, str(error), termination_log)
    except MemoryError:
        return _fail(EXIT_OUT_OF_MEMORY, "out of memory", termination_log)
    except Exception as error:  # noqa: BLE001 - the contract is one line, never a traceback
        if _is_out_of_memory(error):
            return _fail(
                EXIT_OUT_OF_MEMORY, f"out of memory ({_first_line(error)})", termination_log
            )
        return _fail(
            EXIT_INTERNAL,
            f"internal error: {type(error).__name__}: {_first_line(error)}",
            termination_log,
        )
    if termination_log is not None:
        write_termination_message(termination_log, result.model_dump(mode="json"))
    try:
        print(result.model_dump_json(), flush=True)
    except BrokenPipeError:  # the reader left (`| head`): the thumbnail is made, its report lost
        # Standard output pointed at /dev/null, or the interpreter's flush at exit fails again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return _fail(
            EXIT_INTERNAL, "standard output closed before the result could be written", None
        )
    return 0
