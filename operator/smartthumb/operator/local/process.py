"""Runner processes: warm workers forked from the fork server (zygote.py), each run under
a memory limit."""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from smartthumb.operator.lifecycle import RunnerExited, RunRunner
from smartthumb.operator.models import RunOutcome
from smartthumb.runner.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_OUT_OF_MEMORY
from smartthumb.runner.limits import Limits, env_name
from smartthumb.runner.models import MODEL_DIR_ENV
from smartthumb.runner.spec import RunResult, ThumbnailSpec
from smartthumb.runner.subjects import YOLO_ENV

log = logging.getLogger(__name__)

OOM_EXIT_CODES = {EXIT_OUT_OF_MEMORY, -signal.SIGKILL, 128 + signal.SIGKILL}
# Under an address-space limit, native code whose allocation fails often crashes instead of
# raising: a segfault or a C++ abort there is most likely memory, and the fallback is cheap.
CRASH_SIGNALS = {-signal.SIGSEGV, -signal.SIGABRT, -signal.SIGBUS}
# One job per process (the parallelism is across jobs): idle thread pools only inflate RLIMIT_AS.
SINGLE_THREADED = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# The workers parse untrusted images: they get what the runner reads (its limits and models)
# and what any process needs, never the API's tokens, webhook keys or storage credentials.
PASSED_ENV = {
    "PATH",
    "HOME",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "LD_LIBRARY_PATH",
    "PYTHONPATH",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",  # URL sources
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    MODEL_DIR_ENV,
    YOLO_ENV,
    *(env_name(field) for field in Limits.model_fields),
}


def worker_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The fork server's (and so every worker's) environment: `environ` allow-listed."""
    passed = {k: v for k, v in environ.items() if k in PASSED_ENV or k.startswith("LC_")}
    return {**passed, **SINGLE_THREADED}


KILL_WAIT_S = 10.0
"""How long kill() waits for the exit report: a wedged fork server must not hang the engine."""
RESTART_PAUSE_S = 5.0
"""Between failed restarts of the fork server: one that cannot start must not spin."""


class ForkServerError(RuntimeError):
    """The fork server could not start or died."""


def runner_argv(spec: ThumbnailSpec, inputs: list[str], output: Path, run: RunRunner) -> list[str]:
    """The argv of the CLI contract (`smartthumb crop ...`); `inputs`: absolute paths or
    URLs."""
    argv = ["crop", "--spec", spec.model_dump_json(), "-o", str(output.absolute())]
    if run.fallback:
        argv += ["--fallback", "--fallback-reason", run.reason or "fallback"]
    return [*argv, *inputs]


def classify(
    exit_code: int | None, stdout: str, stderr: str, memory_limit_mb: int, attempt: int
) -> RunnerExited:
    """How run `attempt` ended, from its exit status (None: lost with the fork server) and
    output."""
    exited = RunnerExited(attempt=attempt, outcome=RunOutcome.internal)
    if exit_code is None:  # not the job's doing: the lifecycle re-queues it (a few times at most)
        return exited.model_copy(
            update={"outcome": RunOutcome.interrupted, "message": "the runner's fork server died"}
        )

    lines = [line for line in stderr.splitlines() if line.strip()]
    message = lines[-1].removeprefix("smartthumb: error: ") if lines else None
    if exit_code == EXIT_OK:
        try:
            result = RunResult.model_validate_json(stdout.strip().splitlines()[-1])
        except (ValidationError, IndexError):
            return exited.model_copy(update={"message": "unreadable result on stdout"})
        return exited.model_copy(update={"outcome": RunOutcome.ok, "result": result})
    if exit_code == EXIT_BAD_INPUT:
        return exited.model_copy(update={"outcome": RunOutcome.bad_input, "message": message})
    if exit_code in OOM_EXIT_CODES or exit_code in CRASH_SIGNALS:
        if exit_code == EXIT_OUT_OF_MEMORY:
            how = message or "MemoryError"
        else:
            how = f"killed by {signal.Signals(abs(exit_code) % 128).name}"
        return exited.model_copy(
            update={
                "outcome": RunOutcome.oom,
                "message": f"{how} at the {memory_limit_mb} MiB memory limit",
            }
        )
    if exit_code < 0:
        message = f"killed by {signal.Signals(-exit_code).name}"
    return exited.model_copy(update={"message": message or f"exit code {exit_code}"})


class RunnerProcess:
    """One run: stdout and stderr go to `<log_stem>.out` / `.err`."""

    def __init__(
        self, server: ForkServer, run_id: int, log_stem: Path, memory_limit_mb: int
    ) -> None:
        self._server = server
        self.memory_limit_mb = memory_limit_mb
        self.run_id = run_id
        self.stdout = log_stem.with_suffix(".out")
        self.stderr = log_stem.with_suffix(".err")
        self.exit_code: int | None = None
        self.ended = threading.Event()

    def wait(self, timeout: float) -> bool:
        """True when the process has ended within `timeout` seconds."""
        return self.ended.wait(timeout)

    def kill(self) -> None:
        self._server.kill(self.run_id)
        if not self.ended.wait(KILL_WAIT_S):
            log.warning("run %d: no exit report %g s after SIGKILL", self.run_id, KILL_WAIT_S)
            self._server.forget(self.run_id)

    def outcome(self, attempt: int) -> RunnerExited:
        def read(path: Path) -> str:
            return path.read_text(errors="replace") if path.exists() else ""

        return classify(
            self.exit_code, read(self.stdout), read(self.stderr), self.memory_limit_mb, attempt
        )


class ForkServer:
    """The engine's side of zygote.py: sends run/kill requests, routes exit reports. A server
    that dies is started again in the background, with no lock held: runs given meanwhile end
    at once (lost, exit code None), and wait_running() waits for the new server."""

    def __init__(self, max_runs_per_worker: int = 500, start_timeout_s: float = 120) -> None:
        self._max_runs = max_runs_per_worker
        self._start_timeout_s = start_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._starting: subprocess.Popen[bytes] | None = None  # not ready yet: close() kills it
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # notified when it comes up or closes
        self._runs: dict[int, RunnerProcess] = {}
        self._alive = False
        self._closed = False
        self._ids = itertools.count(1)

    @property
    def alive(self) -> bool:
        return self._alive

    def start(self) -> None:
        """Raises ForkServerError when the server is not ready within the start timeout."""
        self._launch()

    def wait_running(self, timeout: float) -> bool:
        """True once the server runs; False after `timeout`, or once closed."""
        with self._changed:
            self._changed.wait_for(lambda: self._alive or self._closed, timeout)
            return self._alive

    def close(self) -> None:
        """Kill the server (its workers die with it) or its start in progress; what still runs
        ends lost."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
            process, starting = self._process, self._starting
        if starting is not None:
            starting.kill()  # its launcher reads EOF instead of "ready" and gives up
        if process is not None:
            _kill(process)

    def run(self, argv: list[str], log_stem: Path, memory_limit_mb: int) -> RunnerProcess:
        with self._lock:
            run = RunnerProcess(self, next(self._ids), log_stem, memory_limit_mb)
            if not self._alive:
                run.ended.set()  # exit code None: lost, as if the server had died under it
                return run
            self._runs[run.run_id] = run
            self._send(
                {
                    "op": "run",
                    "id": run.run_id,
                    "argv": argv,
                    "stdout": str(run.stdout),
                    "stderr": str(run.stderr),
                    "memory_limit_mb": run.memory_limit_mb,
                }
            )
        return run

    def kill(self, run_id: int) -> None:
        with self._lock:
            if self._alive:
                self._send({"op": "kill", "id": run_id})

    def forget(self, run_id: int) -> None:
        """Stop waiting for a run's report (it ends with exit code None)."""
        with self._lock:
            run = self._runs.pop(run_id, None)
        if run is not None:
            run.ended.set()

    def _launch(self) -> None:
        """Start a server and wait for its ready line with no lock held (a warm-up takes
        seconds); one not ready within the start timeout is killed. Raises ForkServerError."""
        process = subprocess.Popen(
            [sys.executable, "-m", "smartthumb.operator.local.zygote", str(self._max_runs)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=worker_env(os.environ),
        )
        with self._lock:
            closed, self._starting = self._closed, process
        failure = "was closed" if closed else _not_ready(process, self._start_timeout_s)
        with self._changed:
            self._starting = None
            if self._closed:
                failure = "was closed"  # close() killed it, or it came up too late
            if failure is None:
                self._process, self._alive = process, True
                self._changed.notify_all()
        if failure is not None:
            _kill(process)
            assert process.stdout is not None
            process.stdout.close()  # no reader thread owns it
            raise ForkServerError(f"the runner fork server {failure} (exit {process.returncode})")
        threading.Thread(
            target=self._serve, args=(process,), name="smartthumb-forkserver", daemon=True
        ).start()

    def _serve(self, process: subprocess.Popen[bytes]) -> None:
        """Route the reports of `process`; once it is gone, start its successor."""
        self._read(process)
        _kill(process)  # EOF: it died, or it hung up; either way it is done with
        if not self._closed:
            log.warning("the runner fork server died (exit %s): restarting it", process.returncode)
            self._restart()

    def _restart(self) -> None:
        """Start a server again until one runs or close() is called."""
        while not self._closed:
            try:
                self._launch()
            except (ForkServerError, OSError) as error:
                if not self._closed:
                    log.error("%s; trying again in %g s", error, RESTART_PAUSE_S)
                with self._changed:
                    self._changed.wait_for(lambda: self._closed, RESTART_PAUSE_S)
            else:
                log.warning("restarted the runner fork server")
                return

    def _send(self, message: dict[str, Any]) -> None:
        assert self._process is not None and self._process.stdin is not None
        try:
            self._process.stdin.write(json.dumps(message).encode() + b"\n")
            self._process.stdin.flush()
        except (BrokenPipeError, ValueError):  # ValueError: stdin closed by close()
            pass  # the reader thread reports the runs of a dead server as ended

    def _read(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        try:
            for line in process.stdout:
                try:
                    message = json.loads(line)
                    run_id, exit_code = message["id"], message["exit_code"]
                except (ValueError, KeyError, TypeError):
                    log.warning("fork server: ignored an unreadable line %r", line[:200])
                    continue
                with self._lock:
                    run = self._runs.pop(run_id, None)
                if run is None:  # a duplicate, or a run given up by forget()
                    log.warning("fork server: report for unknown run %r ignored", run_id)
                    continue
                run.exit_code = exit_code
                run.ended.set()
        finally:
            orphans: list[RunnerProcess] = []
            with self._lock:  # this server is gone: no exit report will come
                if self._process is process:
                    self._alive = False
                    orphans = list(self._runs.values())
                    self._runs.clear()
            for run in orphans:
                run.ended.set()
            process.stdout.close()  # EOF reached: the pipe is this thread's to close


def _not_ready(process: subprocess.Popen[bytes], timeout: float) -> str | None:
    """Why the server did not say it is ready within `timeout` seconds; None when it did."""
    assert process.stdout is not None
    readable, _, _ = select.select([process.stdout], [], [], timeout)
    if not readable:
        return f"was not ready within {timeout:g} s (SMARTTHUMB_RUNNER_START_TIMEOUT_S): killed it"
    line = process.stdout.readline()  # one short write (the ready line) or EOF: no blocking
    if not line:
        return "exited before it was ready"
    with contextlib.suppress(ValueError):
        if json.loads(line) == {"event": "ready"}:
            return None
    return f"wrote {line[:200]!r} instead of its ready line"


def _kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL a server (its workers die with it: zygote.py) and close its stdin."""
    process.kill()
    process.wait()
    if process.stdin is not None:
        with contextlib.suppress(OSError):  # a request still buffered meets the dead pipe
            process.stdin.close()
