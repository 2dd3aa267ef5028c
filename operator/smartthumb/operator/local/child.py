"""A runner worker: forked from the fork server with the runner preloaded, it runs jobs one at
a time, each under its own address-space limit, and stays warm for the next one.

Reusing the process saves the fork, the exit and the copy-on-write faults of a fresh child
(about two thirds of a small job's cost). A run that ends in anything but success or a
clean bad-input refusal ends the worker too, so no job inherits a damaged process.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import sys
from typing import Any

from smartthumb.runner.cli import main
from smartthumb.runner.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_OK, EXIT_OUT_OF_MEMORY

MIB = 1024 * 1024
_REUSABLE = {EXIT_OK, EXIT_BAD_INPUT}


def _vm_kb() -> int:
    """This process's address space (what RLIMIT_AS counts), in KiB; 0 when unknown."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _run_one(request: dict[str, Any]) -> int:
    """Run the CLI contract with stdout/stderr in the run's files and the run's memory limit."""
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(target, fd)
        os.close(target)
    limit = request["memory_limit_mb"] * MIB
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    # Only the soft limit: the next run may need a higher one.
    resource.setrlimit(
        resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard)
    )
    try:
        code = main(request["argv"])
    except SystemExit as exit_:  # argparse's usage errors
        code = exit_.code if isinstance(exit_.code, int) else EXIT_INTERNAL
    except MemoryError:  # raised outside the CLI's own handler (argument parsing, imports)
        code = EXIT_OUT_OF_MEMORY
    except BaseException as error:  # noqa: BLE001 - report it, never let a traceback escape
        print(f"smartthumb: error: internal error: {type(error).__name__}", file=sys.stderr)
        code = EXIT_INTERNAL
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except MemoryError:
        code = EXIT_OUT_OF_MEMORY
    return code


def serve(connection: socket.socket, max_runs: int) -> None:
    """Take runs from the fork server until it hangs up or `max_runs` are done (a bound on
    slow leaks in native libraries); never returns."""
    reader = connection.makefile("rb")
    for runs, line in enumerate(reader, start=1):
        request = json.loads(line)
        code = _run_one(request)
        if code not in _REUSABLE:
            os._exit(code)  # the fork server reports the exit status of this run
        retire = runs >= max_runs
        report = {"id": request["id"], "exit_code": code, "retire": retire, "vm_kb": _vm_kb()}
        connection.sendall(json.dumps(report).encode() + b"\n")
        if retire:
            break
    os._exit(EXIT_OK)
