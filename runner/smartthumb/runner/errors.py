"""Errors the runner reports, each mapped to one process exit code."""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_OUT_OF_MEMORY = 3
"""A MemoryError inside the runner; a kernel OOM kill shows as signal 9 / exit 137 instead."""


class RunnerError(Exception):
    """Base class: a failure the runner explains in one line."""

    exit_code = EXIT_INTERNAL


class BadInputError(RunnerError):
    """The input or the request is unusable: corrupt, unsupported, too big, wrong size."""

    exit_code = EXIT_BAD_INPUT
