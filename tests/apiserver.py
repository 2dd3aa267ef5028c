"""A real smartthumb API for tests: uvicorn on 127.0.0.1 and a free port, in a thread, with
the real engine and a SQLite store under a temporary folder."""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from PIL import Image
from smartthumb.api.app import create_app
from smartthumb.api.settings import ApiSettings

TERMINAL = {"done", "failed"}


class LiveServer:
    def __init__(self, settings: ApiSettings) -> None:
        config = uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=0, log_level="warning", lifespan="on"
        )
        self.settings = settings
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the API server did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)


@contextmanager
def live_server(data_dir: Path, **overrides: Any) -> Iterator[LiveServer]:
    values: dict[str, Any] = {"data_dir": data_dir, "workers": 2, **overrides}
    server = LiveServer(ApiSettings(**values))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def encode(image: Image.Image, fmt: str = "JPEG", **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def wait_done(client: httpx.Client, job_id: str, timeout: float = 60) -> dict:
    """Long-polls GET /job/{id} until done or failed (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get(f"/job/{job_id}", params={"wait": 5})
        assert response.status_code == 200, response.text
        document = response.json()
        if document["status"] in TERMINAL:
            return document
    raise AssertionError(f"job {job_id} did not finish within {timeout}s")


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    """The one error shape: {"error": {"code", "message", "details"}}."""
    assert response.status_code == status, (response.status_code, response.text)
    error = response.json()["error"]
    assert error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error
