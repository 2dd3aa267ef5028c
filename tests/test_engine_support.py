"""Helpers shared by the engine and webhook tests (no tests here)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from PIL import Image
from prometheus_client import CollectorRegistry
from smartthumb.operator.backend import InputFile
from smartthumb.operator.local import EngineSettings, LocalEngine
from smartthumb.operator.metrics import Metrics
from smartthumb.runner.spec import ThumbnailSpec

RESIZE = ThumbnailSpec(mode="resize", width=200, height=200)
T = TypeVar("T")


def jpeg_bytes(width: int = 640, height: int = 360) -> bytes:
    """A real photo-like JPEG: gradients plus noise, so the codec has work to do."""
    rng = np.random.default_rng(width * height)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], axis=-1)
    image = np.clip(image + rng.integers(-20, 20, image.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def jpeg_input(name: str = "photo.jpg", width: int = 640, height: int = 360) -> InputFile:
    return InputFile(name=name, data=jpeg_bytes(width, height))


def slow_png(path: Path) -> Path:
    """A 48-megapixel PNG: decoding it takes the runner about a second (PNG has no draft mode)."""
    if not path.exists():
        y, x = np.mgrid[0:6000, 0:8000]
        image = np.stack([x % 256, y % 256, (x + y) % 256], axis=-1).astype(np.uint8)
        Image.fromarray(image).save(path, compress_level=1)
    return path


def settings(data_dir: Path, **overrides: Any) -> EngineSettings:
    return EngineSettings(**{"data_dir": data_dir, "workers": 2, **overrides})


@contextmanager
def running_engine(data_dir: Path, **overrides: Any) -> Iterator[LocalEngine]:
    """A started engine with its own metrics registry, stopped at the end."""
    engine = LocalEngine(settings(data_dir, **overrides), metrics=Metrics(CollectorRegistry()))
    engine.start()
    try:
        yield engine
    finally:
        engine.stop(graceful=False)


class Receiver:
    """A real webhook receiver (on 127.0.0.1 unless told) that answers with the queued
    status codes (then 200) and records every request."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1") -> None:
        self.requests: list[dict[str, Any]] = []
        self.statuses: list[tuple[int, dict[str, str]]] = []
        self.received = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                with receiver.received:
                    status, headers = receiver.statuses.pop(0) if receiver.statuses else (200, {})
                    receiver.requests.append(
                        {
                            "headers": dict(self.headers),
                            "body": body.decode(),
                            "status": status,
                            "at": time.monotonic(),
                        }
                    )
                    receiver.received.notify_all()
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://{host}:{self.port}/hooks/thumbnail"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, count: int, timeout: float = 20) -> list[dict[str, Any]]:
        with self.received:
            if not self.received.wait_for(lambda: len(self.requests) >= count, timeout):
                raise TimeoutError(f"{len(self.requests)} webhook requests, expected {count}")
            return list(self.requests)

    def payload(self, index: int = 0) -> dict[str, Any]:
        return json.loads(self.requests[index]["body"])


def wait_until(predicate: Any, timeout: float = 20, interval: float = 0.02) -> None:
    """Poll `predicate` until it holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        time.sleep(interval)


def fork_server_pids() -> list[int]:
    """PIDs of this test process's runner fork servers (zygotes): one, or a second starting."""
    me = str(os.getpid())
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes()
            status = (entry / "status").read_text()
        except (OSError, ValueError):
            continue
        parent = next(line.split()[1] for line in status.splitlines() if line.startswith("PPid"))
        if b"smartthumb.operator.local.zygote" in cmdline and parent == me:
            found.append(int(entry.name))
    return found


def fork_server_pid() -> int | None:
    """PID of this test process's runner fork server (the zygote), if one runs."""
    return next(iter(fork_server_pids()), None)


def kill_fork_servers() -> None:
    """SIGKILL this test process's fork servers: a test that failed midway leaves none behind,
    nor an engine blocked on one."""
    for pid in fork_server_pids():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def process_running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie, dead but not reaped, is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


@contextmanager
def fork_server_starts_hang(directory: Path) -> Iterator[None]:
    """Fork servers started meanwhile never get ready, as with a warm-up stuck on a slow disk:
    a sitecustomize that sleeps, on the PYTHONPATH that reaches the fork server."""
    directory.mkdir(exist_ok=True)
    (directory / "sitecustomize.py").write_text("import time\n\ntime.sleep(3600)\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", str(directory), prepend=os.pathsep)
        yield


def returns_within(seconds: float, call: Callable[..., T], *args: Any) -> T:
    """call(*args), failing the test if it blocks past `seconds` (in a daemon thread, which goes
    on: the test's clean-up must unblock it)."""
    future: Future[T] = Future()

    def target() -> None:
        try:
            future.set_result(call(*args))
        except BaseException as error:  # noqa: BLE001 - re-raised by result() below
            future.set_exception(error)

    threading.Thread(target=target, daemon=True).start()
    try:
        return future.result(timeout=seconds)
    except TimeoutError:
        if future.done():
            raise  # the call's own TimeoutError
        pytest.fail(f"{getattr(call, '__name__', call)} blocked for more than {seconds} s")


def runner_workers() -> list[int]:
    """PIDs of the runner workers of this test process's fork server."""
    server = fork_server_pid()
    if server is None:
        return []
    tasks = Path(f"/proc/{server}/task")
    try:
        return sorted(
            int(pid) for task in tasks.iterdir() for pid in (task / "children").read_text().split()
        )
    except OSError:  # the server exited meanwhile
        return []


def vm_size_kb(pid: int) -> int:
    """A process's address space (what RLIMIT_AS counts), from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmSize"))
