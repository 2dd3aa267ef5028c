"""Health, readiness, metrics, docs, bearer-token auth and webhooks over real HTTP."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import httpx
import pytest
from apiserver import BACKENDS, LiveServer, assert_error, b64, encode, serve, wait_done
from PIL import Image

PNG = b64(encode(Image.new("RGB", (40, 30), "green"), "PNG"))
FIT = {"mode": "fit", "width": 20, "image_files": [{"filename": "g.png", "content_base64": PNG}]}


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    data = tmp_path_factory.mktemp("data")
    with serve(request.param, request, data, queue_capacity=77, workers=2) as running:
        yield running


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http


def test_health_and_readiness(client: httpx.Client) -> None:
    for path in ("/health", "/healthz"):
        document = client.get(path).json()
        assert document["status"] == "ok"
        assert document["queue"]["capacity"] == 77 and document["queue"]["workers"] == 2
        assert {"queued", "running"} <= set(document["queue"])
    assert client.get("/readyz").json() == {"ready": True, "reason": None}


def test_metrics_after_a_job(client: httpx.Client, server: LiveServer) -> None:
    job_id = client.post("/thumbnail", json=FIT).json()["job_id"]
    assert wait_done(client, job_id)["status"] == "done"
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    names = ["smartthumb_queue_depth", "smartthumb_jobs_running"]
    if server.kind == "local":  # on Kubernetes the job counters are the operator's metrics
        names += [
            'smartthumb_jobs_finished_total{state="done"}',
            "smartthumb_job_duration_seconds_bucket",
            "smartthumb_fallbacks_total",
        ]
    for name in names:
        assert name in text, name


def test_docs_and_openapi(client: httpx.Client) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    for path in (
        "/thumbnail",
        "/job/{job_id}",
        "/job/{job_id}/image",
        "/upload",
        "/process-images",
        "/batches/{batch_id}",
        "/jobs",
        "/jobs/{job_id}/download",
        "/health",
        "/metrics",
    ):
        assert path in spec["paths"], path
    body = spec["components"]["schemas"]["ThumbnailRequest"]
    assert {"mode", "width", "gap", "image_files", "webhook_url"} <= set(body["properties"])
    assert body["additionalProperties"] is False


def test_web_page_shell_is_served(client: httpx.Client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert '<script src="/static/app.js"' in page.text
    assert client.get("/static/app.js").status_code == 200


def test_bearer_tokens(request: pytest.FixtureRequest, backend_kind: str, tmp_path: Path) -> None:
    with (
        serve(backend_kind, request, tmp_path, api_tokens="alpha, beta") as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        for path in ("/health", "/healthz", "/readyz", "/", "/static/app.js", "/docs"):
            assert client.get(path).status_code == 200, path
        missing = assert_error(client.post("/thumbnail", json=FIT), 401, "unauthorized")
        assert "missing" in missing["message"]
        wrong = client.get("/metrics", headers={"Authorization": "Bearer gamma"})
        assert_error(wrong, 401, "unauthorized")
        assert wrong.headers["www-authenticate"] == "Bearer"
        assert_error(client.get("/job/x"), 401)
        assert_error(client.get("/job/x", params={"wait": 5}), 401)  # the fast path too
        assert_error(client.get("/jobs/x"), 401)
        assert_error(client.get("/batches/x"), 401)
        assert_error(client.get("/jobs/x/download"), 401)
        good = {"Authorization": "Bearer beta"}
        accepted = client.post("/thumbnail", json=FIT, headers=good)
        assert accepted.status_code == 202
        client.headers.update(good)
        job = wait_done(client, accepted.json()["job_id"])
        assert job["status"] == "done"
        assert client.get("/metrics").status_code == 200


class _Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[dict, dict]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append(({**self.headers, "path": self.path}, json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_webhook_is_delivered_and_reported(
    request: pytest.FixtureRequest, backend_kind: str, tmp_path: Path
) -> None:
    receiver = HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    # The receiver's secret rides in the userinfo and the query: the API must not show it.
    hook = f"http://hook:s3cret@127.0.0.1:{receiver.server_port}/hook?token=t0ken"
    try:
        with (
            serve(backend_kind, request, tmp_path, allow_private_webhooks=True) as server,
            # By name, not 127.0.0.1: the webhook's links must follow the address used.
            httpx.Client(
                base_url=server.url.replace("127.0.0.1", "localhost"), timeout=60
            ) as client,
        ):
            accepted = client.post("/thumbnail", json={**FIT, "webhook_url": hook}).json()
            assert accepted["webhook_enabled"] is True
            job_id = accepted["job_id"]
            wait_done(client, job_id)
            for _ in range(100):
                job = client.get(f"/job/{job_id}", params={"wait": 0}).json()
                if job["webhook"]["delivered"]:
                    break
                threading.Event().wait(0.1)
            assert job["webhook"] == {
                **job["webhook"],
                "enabled": True,
                "url": f"http://127.0.0.1:{receiver.server_port}/hook",
                "delivered": True,
                "last_status_code": 204,
            }
            headers, event = _Receiver.received[-1]
            assert event["job_id"] == job_id and event["status"] == "done"
            assert event["job_url"] == f"{str(client.base_url).rstrip('/')}/job/{job_id}"
            assert event["image_url"] == event["job_url"] + "/image"
            assert "webhook-id" in {key.lower() for key in headers}
            assert headers["path"] == "/hook?token=t0ken"  # delivered to the full URL
            assert "s3cret" not in json.dumps(job) and "t0ken" not in json.dumps(job)
    finally:
        receiver.shutdown()
