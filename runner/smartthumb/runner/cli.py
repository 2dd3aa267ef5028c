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
from contextlib import AbstractContextManager, nullcontext, suppress
from enum import Enum
from functools import cache
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, NoReturn, Union, get_args, get_origin

from pydantic import ValidationError
from smartthumb.runner.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_OUT_OF_MEMORY, RunnerError
from smartthumb.runner.limits import Limits, is_url
from smartthumb.runner.spec import OutputFormat, ThumbnailSpec
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
    crop.add_argument("--spec", help="the whole ThumbnailSpec as JSON (instead of the flags below)")
    _add_spec_flags(crop)
    crop.add_argument(
        "--fallback", action="store_true", help="light composer: no detectors, tiny memory"
    )
    crop.add_argument("--fallback-reason", help="why the fallback runs (becomes worker_warning)")
    crop.add_argument(
        "--termination-log", type=Path, help="also write the result here (Kubernetes, <= 4 KiB)"
    )
    crop.add_argument("--max-pixels", type=int, help="refuse sources above this many pixels")
    return parser


def _flag_type(annotation: Any) -> Any:
    """A field's type without Optional and Annotated: int, str, bool or an Enum."""
    while True:
        if get_origin(annotation) is Annotated:
            annotation = get_args(annotation)[0]
        elif get_origin(annotation) in (Union, UnionType):
            annotation = next(arg for arg in get_args(annotation) if arg is not type(None))
        else:
            return annotation


def _flag(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def _add_spec_flags(command: argparse.ArgumentParser) -> None:
    """One flag per ThumbnailSpec field, its help the field's own description. No defaults
    here: a flag left out leaves the model's default (and the output's extension the
    format)."""
    flags = command.add_argument_group("the thumbnail (ThumbnailSpec)")
    for name, field in ThumbnailSpec.model_fields.items():
        kind = _flag_type(field.annotation)
        default = field.default.value if isinstance(field.default, Enum) else field.default
        shown = "" if default is None else f" Default: {default}."
        if name == "format":
            shown = " Default: from the output's extension, else jpeg."
        options: dict[str, Any] = {"dest": name, "help": f"{field.description}{shown}"}
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif isinstance(kind, type) and issubclass(kind, Enum):
            options["choices"] = [member.value for member in kind]
        else:
            options["type"] = kind
        flags.add_argument(_flag(name), **options)


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
    """Raises ValidationError, or ValueError for --spec together with a spec flag."""
    given = {
        name: getattr(args, name)
        for name in ThumbnailSpec.model_fields
        if getattr(args, name) is not None
    }
    if args.spec:
        if given:
            flags = ", ".join(_flag(name) for name in given)
            raise ValueError(f"--spec is the whole spec: give {flags} inside it, not beside it")
        return ThumbnailSpec.model_validate_json(args.spec)
    if "format" not in given and isinstance(args.output, Path):
        # `-o thumb.png` means a PNG; an extension that names no format says nothing.
        with suppress(ValueError):
            given["format"] = OutputFormat.from_name(args.output.suffix.lower().lstrip("."))
    return ThumbnailSpec(**given)


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
    except ValueError as error:
        return _fail(EXIT_BAD_INPUT, str(error), termination_log)
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
