"""A real smartthumb API for tests: uvicorn on 127.0.0.1 and a free port, in a thread, on
either backend: the local engine with a SQLite store under a temporary folder, or the
Kubernetes backend on the test control plane, its jobs run by the operator as real runner
pods on the real node (that folder is then the shared volume).

Tests written against `serve(kind, ...)` with `BACKENDS` as parameters run on both."""

from __future__ import annotations

import base64
import io
import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from PIL import Image
from pydantic import BaseModel
from smartthumb.api.app import create_app
from smartthumb.api.server import server_config
from smartthumb.api.settings import ApiSettings
from smartthumb.operator.backend import Backend
from smartthumb.operator.kube.backend import KubernetesBackend
from smartthumb.operator.kube.settings import KubernetesBackendSettings, OperatorSettings
from smartthumb.operator.local import EngineSettings, LocalEngine
from test_engine_support import fork_server_pid, wait_until

TERMINAL = {"done", "failed"}


BACKENDS = [
    "local",
    pytest.param("kubernetes", marks=[pytest.mark.cluster, pytest.mark.node]),
]
"""Parameters of a fixture whose tests run on both backends."""


class LiveServer:
    def __init__(
        self, settings: ApiSettings, backend: Backend, data_dir: Path, kind: str = "local"
    ) -> None:
        config = server_config(
            create_app(settings, backend),
            settings,
            host="127.0.0.1",
            port=0,
            log_level="warning",
            lifespan="on",
        )
        self.settings = settings
        self.backend = backend
        self.data_dir = data_dir
        """The engine's data folder, or the shared volume on Kubernetes."""
        self.kind = kind
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


def _split(overrides: dict[str, Any], *models: type[BaseModel]) -> list[dict[str, Any]]:
    """The overrides each settings model takes, by field name; a name none takes is a typo."""
    parts: list[dict[str, Any]] = [{} for _ in models]
    for key, value in overrides.items():
        owners = [index for index, model in enumerate(models) if key in model.model_fields]
        if not owners:
            raise TypeError(f"no setting {key!r}")
        for index in owners:
            parts[index][key] = value
    return parts


@contextmanager
def _running(server: LiveServer) -> Iterator[LiveServer]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def live_server(data_dir: Path, **overrides: Any) -> Iterator[LiveServer]:
    """The API on the local engine."""
    api, engine = _split(overrides, ApiSettings, EngineSettings)
    settings = ApiSettings(**api)
    engine.pop("public_url", None)  # the API's, handed over below
    engine = {"workers": 2, **engine}
    backend = LocalEngine(
        EngineSettings(data_dir=data_dir, public_url=settings.webhook_public_url(), **engine)
    )
    with _running(LiveServer(settings, backend, data_dir)) as server:
        yield server


KUBE_NAMES = {"workers": "max_running"}
"""Local settings with another name on Kubernetes (the operator runs that many pods)."""


@contextmanager
def kube_server(
    request: pytest.FixtureRequest, volume: Path, **overrides: Any
) -> Iterator[LiveServer]:
    """The API on the Kubernetes backend, with an operator running its namespace's jobs on
    the real node; `volume` is the shared volume."""
    from kubestack import real_node_operator, volume_namespace

    cluster = request.getfixturevalue("kube_cluster")
    node = request.getfixturevalue("real_node")
    request.getfixturevalue("installed_crd")
    renamed = {KUBE_NAMES.get(key, key): value for key, value in overrides.items()}
    if "ttl_s" in renamed:  # whole seconds on Kubernetes
        renamed["ttl_s"] = max(1, math.ceil(renamed["ttl_s"]))
    api, backend_fields, operator_fields = _split(
        renamed, ApiSettings, KubernetesBackendSettings, OperatorSettings
    )
    settings = ApiSettings(**api)
    volume.mkdir(parents=True, exist_ok=True)
    with cluster.api_client() as admin, volume_namespace(admin, volume) as namespace:
        backend = KubernetesBackend(
            KubernetesBackendSettings(namespace=namespace, volume_path=volume, **backend_fields),
            cluster.api_client(),
        )
        operator_env = {
            key: str(value).lower() if isinstance(value, bool) else str(value)
            for key, value in operator_fields.items()
        }
        with (
            _running(LiveServer(settings, backend, volume, "kubernetes")) as server,
            real_node_operator(
                cluster,
                node,
                volume,
                namespace,
                public_url=settings.webhook_public_url(),
                **operator_env,
            ),
        ):
            yield server


@contextmanager
def serve(
    kind: str, request: pytest.FixtureRequest, data_dir: Path, **overrides: Any
) -> Iterator[LiveServer]:
    """The API on backend `kind` ("local" or "kubernetes"; see BACKENDS)."""
    if kind == "kubernetes":
        with kube_server(request, data_dir, **overrides) as server:
            yield server
    else:
        with live_server(data_dir, **overrides) as server:
            yield server


@contextmanager
def runs_held(server: LiveServer) -> Iterator[None]:
    """While the block runs, no run of the local engine starts or ends: this test process's
    fork server is stopped (SIGSTOP), so a job the engine starts meanwhile stays `processing`
    and those behind it stay queued, however fast the machine is. (On Kubernetes, where a
    pod takes seconds to start, nothing is held.)"""
    if server.kind != "local":
        yield
        return
    wait_until(server.backend.healthy, timeout=120)  # its fork server up and ready
    held = fork_server_pid()
    assert held is not None
    os.kill(held, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(held, signal.SIGCONT)


@contextmanager
def file_server(host: str, files: dict[str, bytes]) -> Iterator[str]:
    """Plain HTTP on `host` serving `files` by name (URL sources); its base URL."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = files.get(self.path.split("?", 1)[0].lstrip("/"))
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((host, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


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
