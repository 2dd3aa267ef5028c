"""Hostile and broken clients, over real sockets: slow or endless heads and bodies, oversized
headers, anonymous uploads. Each gets a readable JSON refusal (or a closed idle connection)
and none of them holds the server or the upload budget."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from apiserver import LiveServer, assert_error, live_server


@contextmanager
def raw(server: LiveServer) -> Iterator[socket.socket]:
    address = urlsplit(server.url)
    conn = socket.create_connection((address.hostname, address.port), timeout=10)
    try:
        yield conn
    finally:
        conn.close()


def read_answer(conn: socket.socket) -> tuple[int, dict, bytes]:
    """Status, headers and body of one response; the server must close after it."""
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def assert_refusal(conn: socket.socket, status: int, code: str) -> dict:
    got, headers, body = read_answer(conn)
    assert got == status, (got, body[:300])
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    error = json.loads(body)["error"]
    assert error["code"] == code, error
    return error


def trickle(conn: socket.socket, data: bytes, pause_s: float) -> None:
    """One byte at a time, until the server has answered and closed."""
    try:
        for byte in data:
            conn.sendall(bytes([byte]))
            time.sleep(pause_s)
    except OSError:
        pass


def upload_head(length: int, token: str | None = None) -> bytes:
    auth = f"authorization: Bearer {token}\r\n" if token else ""
    return (
        "POST /thumbnail HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n"
        f"{auth}content-length: {length}\r\n\r\n"
    ).encode()


NO_IMAGES = b'{"image_files": []}'.ljust(90_000)


def post_no_images(client: httpx.Client, **headers: str) -> httpx.Response:
    return client.post(
        "/thumbnail", content=NO_IMAGES, headers={"content-type": "application/json", **headers}
    )


def test_anonymous_uploads_are_refused_before_their_body(tmp_path: Path) -> None:
    """Two anonymous connections declaring the largest body, sending none of it, get 401 at
    once and pin nothing: an authorised upload of 90 kB still goes through."""
    settings = {"api_tokens": "alpha", "max_upload_bytes": 100_000, "max_in_flight_bytes": 150_000}
    with live_server(tmp_path, **settings) as server, raw(server) as one, raw(server) as two:
        for conn in (one, two):
            conn.sendall(upload_head(100_000))
        for conn in (one, two):
            error = assert_refusal(conn, 401, "unauthorized")
            assert "missing bearer token" in error["message"]
        with httpx.Client(base_url=server.url, timeout=10) as client:
            answer = post_no_images(client, authorization="Bearer alpha")
            assert_error(answer, 400, "no_images")


def test_a_declared_length_reserves_nothing_until_it_arrives(tmp_path: Path) -> None:
    with (
        live_server(tmp_path, max_upload_bytes=100_000, max_in_flight_bytes=150_000) as server,
        raw(server) as one,
        raw(server) as two,
        httpx.Client(base_url=server.url, timeout=10) as client,
    ):
        for conn in (one, two):
            conn.sendall(upload_head(100_000))
        time.sleep(0.3)  # both heads read by the server
        assert_error(post_no_images(client), 400, "no_images")


def test_a_body_that_does_not_arrive_in_time_gets_408(tmp_path: Path) -> None:
    with live_server(tmp_path, body_timeout_s=1) as server, raw(server) as conn:
        conn.sendall(upload_head(1000) + b'{"image_files": ')
        started = time.monotonic()
        error = assert_refusal(conn, 408, "request_timeout")
        assert "within 1 s" in error["message"]
        assert time.monotonic() - started < 5


def test_a_trickled_body_is_cut_at_the_deadline(tmp_path: Path) -> None:
    """One byte at a time keeps a connection busy, not alive: the deadline is for the body."""
    with live_server(tmp_path, body_timeout_s=1.5) as server, raw(server) as conn:
        conn.sendall(upload_head(1000))
        started = time.monotonic()
        trickle(conn, b" " * 40, 0.1)
        assert_refusal(conn, 408, "request_timeout")
        assert time.monotonic() - started < 5


def test_a_head_that_does_not_arrive_in_time_gets_408(tmp_path: Path) -> None:
    with live_server(tmp_path, header_timeout_s=1) as server:
        with raw(server) as conn:
            conn.sendall(b"POST /thumbnail HTTP/1.1\r\nhost: te")
            started = time.monotonic()
            assert_refusal(conn, 408, "request_timeout")
            assert time.monotonic() - started < 5
        with raw(server) as idle:
            started = time.monotonic()
            assert idle.recv(100) == b"", "an idle connection is closed without an answer"
            assert time.monotonic() - started < 5
        with raw(server) as kept:  # the second request of a kept-alive connection, trickled
            kept.sendall(b"GET /health HTTP/1.1\r\nhost: test\r\n\r\n")
            first = kept.recv(65536)
            assert first.startswith(b"HTTP/1.1 200"), first[:100]
            started = time.monotonic()
            trickle(kept, b"GET /health HTTP/1.1\r\nhost", 0.1)
            assert_refusal(kept, 408, "request_timeout")
            assert time.monotonic() - started < 5


def test_oversized_and_malformed_heads_get_json_refusals(tmp_path: Path) -> None:
    with live_server(tmp_path) as server:
        with raw(server) as conn:
            conn.sendall(b"GET /health HTTP/1.1\r\nx-big: " + b"a" * 100_000 + b"\r\n\r\n")
            assert_refusal(conn, 431, "headers_too_large")
        with raw(server) as conn:
            many = b"".join(b"x-%d: 1\r\n" % n for n in range(150))
            conn.sendall(b"GET /health HTTP/1.1\r\n" + many + b"\r\n")
            error = assert_refusal(conn, 431, "headers_too_large")
            assert "100 headers" in error["message"]
        with raw(server) as conn:
            conn.sendall(b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nhost: test\r\n\r\n")
            assert_refusal(conn, 414, "uri_too_long")
        with raw(server) as conn:
            conn.sendall(b"\x00\x01 nonsense\r\n\r\n")
            assert_refusal(conn, 400, "bad_request")


def test_an_endless_header_line_is_cut_off_early(tmp_path: Path) -> None:
    """A 64 MiB header line is not buffered: the server answers and closes after 64 KiB."""
    with live_server(tmp_path) as server, raw(server) as conn:
        conn.sendall(b"GET /health HTTP/1.1\r\nx-big: ")
        sent = 0
        try:
            while sent < 64 * 1024 * 1024:
                conn.sendall(b"a" * 65536)
                sent += 65536
        except OSError:
            pass
        assert sent < 8 * 1024 * 1024, f"{sent} bytes of one header line were accepted"


def test_refusals_mid_upload_are_readable(tmp_path: Path) -> None:
    """A client still sending its body reads the refusal instead of a connection reset."""
    big = b"x" * (8 * 1024 * 1024)
    settings = {"api_tokens": "alpha", "max_upload_bytes": 1_000_000}
    with (
        live_server(tmp_path, **settings) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        json_type = {"content-type": "application/json"}
        anonymous = client.post("/thumbnail", content=big, headers=json_type)
        assert_error(anonymous, 401, "unauthorized")
        declared = client.post(
            "/thumbnail", content=big, headers={**json_type, "authorization": "Bearer alpha"}
        )
        assert_error(declared, 413, "payload_too_large")

        def chunks() -> Iterator[bytes]:
            for _ in range(64):
                yield b"x" * 131072  # 8 MiB without a Content-Length

        streamed = client.post(
            "/thumbnail", content=chunks(), headers={**json_type, "authorization": "Bearer alpha"}
        )
        assert_error(streamed, 413, "payload_too_large")
