"""Status documents over real HTTP: an ETag of what was sent, 304 to a client that has it,
a new document as soon as the job (or its place in the queue) changes, links that follow the
URL each client used; and the per-revision document cache itself."""

from __future__ import annotations

import contextlib
import re
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from apiserver import LiveServer, b64, encode, live_server, runs_held, wait_done
from images import photo
from smartthumb.api import access
from smartthumb.api.documents import DocumentCache
from smartthumb.api.links import Links
from smartthumb.api.schemas.jobs import SimpleJobStatus
from smartthumb.api.schemas.thumbnail import JobStatus
from smartthumb.operator.models import Job
from smartthumb.runner.spec import ThumbnailSpec
from test_engine_support import wait_until


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("data"), workers=1) as running:
        yield running


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http


def slow_jobs(client: httpx.Client, count: int) -> list[str]:
    """`count` crops of a large photo on one worker: those behind the first may wait in the
    queue (started_and_held makes sure they do)."""
    big = b64(encode(photo("chelsea").resize((3000, 2000)), quality=90))
    body = {
        "mode": "crop",
        "width": 200,
        "height": 200,
        "image_files": [{"filename": "big", "content_base64": big}],
    }
    return [client.post("/thumbnail", json=body).json()["job_id"] for _ in range(count)]


@contextlib.contextmanager
def started_and_held(client: httpx.Client, server: LiveServer) -> Iterator[str]:
    """A job the engine has started, held until the block ends (runs_held): it cannot
    finish, and the jobs submitted meanwhile wait in the queue."""
    with runs_held(server):
        (running,) = slow_jobs(client, 1)
        wait_until(lambda: client.get(f"/job/{running}").json()["status"] == "processing")
        yield running


def unchanged(client: httpx.Client, path: str) -> tuple[str, dict]:
    """A document and its ETag that a second, conditional GET answers 304 to (tried again
    while the job moves meanwhile: each change must come with a new ETag)."""
    for _ in range(20):
        first = client.get(path)
        assert first.status_code == 200
        etag = first.headers["etag"]
        again = client.get(path, headers={"If-None-Match": etag})
        if again.status_code == 304:
            assert again.content == b"" and again.headers["etag"] == etag
            return etag, first.json()
        assert again.status_code == 200 and again.headers["etag"] != etag
        assert again.json() != first.json()
    raise AssertionError(f"{path} never stood still")


@pytest.mark.parametrize("path", ["/job/{}", "/jobs/{}"])
def test_a_client_with_the_document_gets_304_until_the_job_changes(
    client: httpx.Client, server: LiveServer, path: str
) -> None:
    with started_and_held(client, server) as running:
        ids = [running, *slow_jobs(client, 1)]
        last = path.format(ids[-1])
        etag, queued = unchanged(client, last)
        assert queued["status"] in ("queued", "pending")
        for tag in ("*", f"W/{etag}", f'"other", {etag}'):
            assert client.get(last, headers={"If-None-Match": tag}).status_code == 304
        assert client.get(last, headers={"If-None-Match": '"other"'}).status_code == 200
    for job_id in ids:
        wait_done(client, job_id, timeout=120)
    changed = client.get(last, headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert changed.json()["status"] in ("done", "completed")
    new_etag, done = unchanged(client, last)
    assert done == changed.json() and new_etag == changed.headers["etag"]
    # The documents are what their response models describe.
    model = JobStatus if path == "/job/{}" else SimpleJobStatus
    model.model_validate(done)


def test_the_queue_position_is_current_while_the_job_itself_stands_still(
    client: httpx.Client, server: LiveServer
) -> None:
    with started_and_held(client, server) as running:
        ids = [running, *slow_jobs(client, 2)]
        path = f"/job/{ids[-1]}"
        _, waiting = unchanged(client, path)
        assert waiting["status"] == "queued" and waiting["queue_position"] == 2
    long_poll = client.get(f"/job/{ids[0]}", params={"wait": 60}).json()
    assert long_poll["status"] == "done"
    moved = client.get(path).json()
    assert moved["status"] != "queued" or moved["queue_position"] == 1
    assert moved["pending_jobs"] < waiting["pending_jobs"] or moved["status"] != "queued"
    for job_id in ids:
        wait_done(client, job_id, timeout=120)


def test_links_follow_the_url_each_client_used(client: httpx.Client, server: LiveServer) -> None:
    job_id = slow_jobs(client, 1)[0]
    port = server.url.rsplit(":", 1)[1]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"127.0.0.1:{port}"):
        for path in (f"/job/{job_id}", f"/jobs/{job_id}"):
            document = client.get(path, headers={"Host": host}).json()
            assert document.get("job_url", document.get("download_url", "")).startswith(
                f"http://{host}/"
            ), document
    wait_done(client, job_id, timeout=120)


def job(revision: int | None) -> Job:
    made = Job(
        id="a",
        spec=ThumbnailSpec(mode="fit", width=10),
        input_names=["a.png"],
        created_at=datetime(2025, 1, 1, tzinfo=UTC),
    )
    made.revision = revision
    return made


def test_the_cache_makes_a_document_once_per_revision_and_base_url() -> None:
    cache = DocumentCache(size=2)
    made: list[tuple[int | None, str]] = []

    def make(job: Job, links: Links) -> dict:
        made.append((job.revision, links.base_url))
        return {"n": len(made)}

    def shown(*args: object) -> dict:
        return orjson.loads(cache.render(*args).body)  # type: ignore[arg-type]

    here, there = Links("http://here"), Links("http://there")
    assert shown("k", job(1), here, make) == {"n": 1}
    assert shown("k", job(1), here, make) == {"n": 1}
    assert shown("k", job(2), here, make) == {"n": 2}
    assert shown("k", job(2), there, make) == {"n": 3}
    assert shown("other", job(2), there, make) == {"n": 4}
    assert shown("k", job(None), there, make) == {"n": 5}  # no revision: never kept
    assert shown("k", job(None), there, make) == {"n": 6}
    assert len(cache._entries) == 2  # bounded
    # Fields that change by themselves are applied to the same document, with a new ETag.
    first = cache.render("k", job(3), here, make, {"queue_position": 2})
    again = cache.render("k", job(3), here, make, {"queue_position": 2})
    moved = cache.render("k", job(3), here, make, {"queue_position": 1})
    assert again is first and moved.etag != first.etag
    assert orjson.loads(moved.body) == {"n": 7, "queue_position": 1}


def test_long_polls_answer_when_the_job_finishes_or_goes_or_time_is_up(
    client: httpx.Client, server: LiveServer
) -> None:
    with ThreadPoolExecutor(2) as pool, started_and_held(client, server) as running:
        (queued,) = slow_jobs(client, 1)
        started = time.monotonic()
        waited = client.get(f"/job/{queued}", params={"wait": 0.5})
        assert waited.status_code == 200 and waited.json()["status"] == "queued"
        assert 0.4 < time.monotonic() - started < 5
        finished = pool.submit(client.get, f"/job/{running}", params={"wait": 60})
        # Cancelled while a long-poll waits on it: the long-poll answers 404 at once.
        pending = pool.submit(client.get, f"/job/{queued}", params={"wait": 60})
        time.sleep(0.3)
        cancelled = time.monotonic()
        assert client.delete(f"/job/{queued}").status_code == 204
        assert pending.result(timeout=10).status_code == 404
        assert time.monotonic() - cancelled < 2
        assert not finished.done()  # its job cannot finish while runs are held
    # Let go, the job finishes and its long-poll answers with the result.
    answer = finished.result(timeout=60)
    assert answer.status_code == 200 and answer.json()["status"] == "done"
    assert client.get("/job/nope", params={"wait": 60}).status_code == 404


def test_images_are_sent_whole_with_the_file_s_headers(
    client: httpx.Client, server: LiveServer
) -> None:
    (job_id,) = slow_jobs(client, 1)
    wait_done(client, job_id, timeout=120)
    stored = server.data_dir / "jobs" / job_id / "thumbnail.jpg"
    for path, disposition in (
        (f"/jobs/{job_id}/download", "attachment"),
        (f"/job/{job_id}/image", "inline"),
    ):
        answer = client.get(path)
        assert answer.status_code == 200
        assert answer.content == stored.read_bytes()
        assert answer.headers["content-type"] == "image/jpeg"
        assert answer.headers["content-length"] == str(len(answer.content))
        assert answer.headers["content-disposition"] == f'{disposition}; filename="{job_id}.jpg"'
        assert answer.headers["etag"] and answer.headers["last-modified"]
    assert client.get(f"/job/{job_id}/image").headers["cache-control"] == "private, max-age=3600"


def test_larger_images_are_streamed_with_ranges(
    client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    (job_id,) = slow_jobs(client, 1)
    wait_done(client, job_id, timeout=120)
    whole = client.get(f"/jobs/{job_id}/download")
    assert "accept-ranges" not in whole.headers  # small: read whole, sent at once
    monkeypatch.setattr(access, "SMALL_FILE", 0)  # every image counts as large now
    streamed = client.get(f"/jobs/{job_id}/download")
    assert streamed.content == whole.content and streamed.headers["accept-ranges"] == "bytes"
    assert streamed.headers["etag"] == whole.headers["etag"]
    part = client.get(f"/jobs/{job_id}/download", headers={"Range": "bytes=0-9"})
    assert part.status_code == 206 and part.content == whole.content[:10]


SIMPLE_JOB = {
    "image_data": b64(encode(photo("chelsea").resize((64, 48)), "PNG")),
    "operation": "resize",
    "width": 32,
    "height": 32,
}
"""Seed 002's POST /jobs body: a small resize."""


def _raw_exchange(server: LiveServer, requests: list[bytes], answers: int) -> list[bytes]:
    """Send `requests` in one write on one connection (pipelined) and read `answers`
    responses back, each as its head (status line and headers)."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(b"".join(requests))
        stream = connection.makefile("rb")
        heads = []
        for _ in range(answers):
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                head += stream.readline()
            length = re.search(rb"(?im)^content-length: *(\d+)", head)
            stream.read(int(length[1]) if length else 0)
            heads.append(head)
        return heads


def _get(path: str, *headers: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: test", *headers, "", ""]
    return "\r\n".join(lines).encode()


def test_an_unchanged_poll_is_answered_304_in_order_and_the_connection_goes_on(
    client: httpx.Client, server: LiveServer
) -> None:
    job_id = client.post("/jobs", json=SIMPLE_JOB).json()["job_id"]
    wait_done(client, job_id, timeout=60)
    path = f"/jobs/{job_id}"
    etag = client.get(path, headers={"Host": "test"}).headers["etag"]
    conditional = _get(path, f"If-None-Match: {etag}")
    # 304, then on the same connection a 200 and a 304 again; pipelined behind a request
    # still being answered (a 200 with its body), a 304 keeps its place.
    heads = _raw_exchange(server, [conditional, _get(path), conditional], 3)
    assert [head.split(b" ")[1] for head in heads] == [b"304", b"200", b"304"]
    assert all(f"etag: {etag}".encode() in head.lower() for head in heads)
    assert b"cache-control: no-cache" in heads[0].lower()


def test_an_early_304_needs_the_token_like_any_request(tmp_path: Path) -> None:
    with live_server(tmp_path, api_tokens="alpha") as server:
        auth = {"Authorization": "Bearer alpha"}
        with httpx.Client(base_url=server.url, timeout=60, headers=auth) as client:
            job_id = client.post("/jobs", json=SIMPLE_JOB).json()["job_id"]
            wait_done(client, job_id, timeout=60)
            path = f"/jobs/{job_id}"
            etag = client.get(path, headers={"Host": "test"}).headers["etag"]
        conditional = f"If-None-Match: {etag}"
        heads = _raw_exchange(
            server,
            [
                _get(path, conditional, "Authorization: Bearer alpha"),
                _get(path, conditional, "Authorization: Bearer beta"),
            ],
            2,
        )
        assert [head.split(b" ")[1] for head in heads] == [b"304", b"401"]
        (refused,) = _raw_exchange(server, [_get(path, conditional)], 1)
        assert refused.split(b" ")[1] == b"401"


def test_an_unchanged_poll_never_reaches_the_app(client: httpx.Client, server: LiveServer) -> None:
    job_id = client.post("/jobs", json=SIMPLE_JOB).json()["job_id"]
    wait_done(client, job_id, timeout=60)
    path = f"/jobs/{job_id}"
    etag = client.get(path).headers["etag"]
    seen: list[str] = []
    inner = server.server.config.loaded_app

    async def spy(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope.get("path", ""))
        await inner(scope, receive, send)

    server.server.config.loaded_app = spy  # for the connections made from now on
    try:
        with httpx.Client(base_url=server.url, timeout=60) as fresh:
            assert fresh.get(path, headers={"If-None-Match": etag}).status_code == 304
            assert fresh.get(path, headers={"If-None-Match": '"other"'}).status_code == 200
    finally:
        server.server.config.loaded_app = inner
    assert seen == [path]  # only the poll whose tag did not match
