"""The body of one runner process, forked from the fork server that preloaded the runner."""

from __future__ import annotations

import os
import resource
import sys

from smartthumb.runner.cli import main
from smartthumb.runner.errors import EXIT_INTERNAL, EXIT_OUT_OF_MEMORY

MIB = 1024 * 1024


def run(argv: list[str], stdout_path: str, stderr_path: str, memory_limit_mb: int) -> None:
    """Run the CLI contract under an address-space limit; never returns."""
    # Redirect first so that even a failure of the limit itself lands in the files.
    for fd, path in ((1, stdout_path), (2, stderr_path)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(target, fd)
        os.close(target)
    limit = memory_limit_mb * MIB
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's usage errors
        code = exit_.code if isinstance(exit_.code, int) else EXIT_INTERNAL
    except MemoryError:  # raised outside the CLI's own handler (argument parsing, imports)
        code = EXIT_OUT_OF_MEMORY
    except BaseException as error:  # noqa: BLE001 - report it, never let multiprocessing print
        print(f"smartthumb: error: internal error: {type(error).__name__}", file=sys.stderr)
        code = EXIT_INTERNAL
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except MemoryError:
        code = EXIT_OUT_OF_MEMORY
    os._exit(code)
