"""Bad input of every kind gets a 4xx with the one JSON error shape; never a 500."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from apiserver import BACKENDS, LiveServer, assert_error, b64, encode, live_server, serve
from images import photo
from PIL import Image
from smartthumb.api.settings import ApiSettings

SMALL_PNG = b64(encode(Image.new("RGB", (8, 8), "blue"), "PNG"))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("paths")
    inside = base / "root"
    inside.mkdir()
    photo("camera").save(inside / "ok.jpg")
    (inside / "notes.txt").write_text("not an image")
    outside = base / "secret.jpg"
    photo("rocket").save(outside)
    os.symlink(outside, inside / "escape.jpg")
    os.symlink(inside / "ok.jpg", inside / "alias.jpg")
    return inside


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, root: Path
) -> Iterator[LiveServer]:
    with serve(
        request.param,
        request,
        tmp_path_factory.mktemp("data"),
        input_root=root,
        workers=1,
        max_images=3,
        max_inline_bytes=300_000,
        max_upload_bytes=2_000_000,
    ) as running:
        yield running


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http


def inline(content: str, **spec: object) -> dict:
    return {
        "mode": "fit",
        "width": 64,
        **spec,
        "image_files": [{"filename": "x.jpg", "content_base64": content}],
    }


@pytest.mark.parametrize(
    ("content", "code"),
    [
        ("%%% not base64 %%%", "invalid_base64"),
        ("aGVsbG8", "invalid_base64"),  # missing padding
        (b64(b"hello, I am plain text"), "invalid_image"),
        (b64(b"\x89PNG\r\n\x1a\n" + os.urandom(64)), "invalid_image"),  # PNG magic, garbage
        (b64(b"\xff\xd8\xff" + b"\x00" * 10), "invalid_image"),  # JPEG magic, no header
        ("", None),  # empty: refused by the schema (422)
    ],
)
def test_not_an_image_is_refused_at_submit(client: httpx.Client, content: str, code: str) -> None:
    response = client.post("/thumbnail", json=inline(content))
    assert_error(response, 422 if code is None else 400, code)


@pytest.mark.parametrize(("fmt", "suffix"), [("TGA", "tga"), ("ICO", "ico"), ("PCX", "pcx")])
def test_formats_the_runner_does_not_read_are_refused_at_submit(
    client: httpx.Client, fmt: str, suffix: str
) -> None:
    # Real files Pillow can read: refused because only the runner's parsers may see them.
    data = encode(Image.new("RGB", (16, 16), "green"), fmt)
    response = client.post("/thumbnail", json=inline(b64(data)))
    error = assert_error(response, 400, "invalid_image")
    assert "supported" in error["message"]
    upload = client.post("/upload", files={"file": (f"x.{suffix}", data, "image/x-any")})
    assert_error(upload, 400, "invalid_image")


def test_data_url_prefix_is_accepted(client: httpx.Client) -> None:
    response = client.post("/thumbnail", json=inline(f"data:image/png;base64,{SMALL_PNG}"))
    assert response.status_code == 202, response.text


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("../etc/passwd", "path_not_allowed"),
        ("ok/../../secret.jpg", "path_not_allowed"),
        ("/etc/passwd", "path_not_allowed"),
        ("escape.jpg", "path_not_allowed"),  # a symlink pointing out of the root
        ("missing.jpg", "input_not_found"),
        ("notes.txt", "invalid_image"),
        (".", "input_not_found"),  # the root itself is no file
    ],
)
def test_server_paths_stay_inside_the_input_root(
    client: httpx.Client, path: str, code: str
) -> None:
    assert_error(client.post("/thumbnail", json={"image_paths": [path]}), 400, code)


def test_absolute_path_inside_the_root_and_inner_symlink_are_fine(
    client: httpx.Client, root: Path
) -> None:
    for path in (str(root / "ok.jpg"), "alias.jpg"):
        response = client.post(
            "/thumbnail", json={"image_paths": [path], "mode": "fit", "width": 32}
        )
        assert response.status_code == 202, response.text


def test_paths_are_refused_without_an_input_root(tmp_path: Path) -> None:
    with live_server(tmp_path) as server, httpx.Client(base_url=server.url) as client:
        response = client.post("/thumbnail", json={"image_path": "ok.jpg"})
        assert_error(response, 400, "image_paths_disabled")


def test_limits(client: httpx.Client) -> None:
    four = {
        "mode": "pair",
        "image_files": [{"filename": f"{n}.png", "content_base64": SMALL_PNG} for n in range(4)],
    }
    assert_error(client.post("/thumbnail", json=four), 400, "too_many_images")
    assert_error(client.post("/thumbnail", json={"mode": "pair"}), 400, "no_images")
    big = b64(os.urandom(400_000))
    assert_error(client.post("/thumbnail", json=inline(big)), 413, "image_too_large")
    huge = "A" * 2_100_000
    assert_error(client.post("/thumbnail", json=inline(huge)), 413, "payload_too_large")
    big_part = {"file": ("big.jpg", os.urandom(400_000), "image/jpeg")}
    assert_error(client.post("/upload", files=big_part), 413, "image_too_large")
    many = [
        ("images", (f"{n}.png", encode(Image.new("RGB", (4, 4)), "PNG"), "image/png"))
        for n in range(4)
    ]
    assert_error(client.post("/process-images", files=many), 400, "too_many_images")


def test_streamed_body_over_the_limit_is_cut_off(client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b"x" * 100_000  # 4 MB without a Content-Length

    response = client.post(
        "/thumbnail", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_error(response, 413, "payload_too_large")


def test_decompression_bomb_header_is_refused(client: httpx.Client) -> None:
    # A tiny PNG whose header claims 30000 x 30000 pixels (900 MP > the 50 MP limit).
    bomb = encode(Image.new("1", (30000, 30000)), "PNG", optimize=True)
    assert len(bomb) < 300_000
    assert_error(client.post("/thumbnail", json=inline(b64(bomb))), 413, "image_too_large")


@pytest.mark.parametrize(
    "body",
    [
        inline(SMALL_PNG, width="wide"),
        inline(SMALL_PNG, mode="stretch"),
        inline(SMALL_PNG, colour="red"),  # unknown field
        inline(SMALL_PNG, mode="resize", height=None),  # resize needs both sides
        inline(SMALL_PNG, mode="fit", aspect="4:3"),  # aspect is for crop only
        inline(SMALL_PNG, mode="crop", height=None),  # crop needs both or an aspect
        inline(SMALL_PNG, width=0),
        inline(SMALL_PNG, width=100_000),
        inline(SMALL_PNG, quality=0),
        inline(SMALL_PNG, format="gif"),
        {"image_files": [{"filename": "x.png"}]},
        {"image_files": [{"filename": "x.png", "content_base64": SMALL_PNG, "extra": 1}]},
        {"image_files": "x.png"},
        {"image_paths": "ok.jpg"},
        inline(SMALL_PNG, webhook_url="not a url"),
        inline(SMALL_PNG, webhook_url="ftp://example.com/hook"),
    ],
)
def test_schema_errors_are_422(client: httpx.Client, body: dict) -> None:
    error = assert_error(client.post("/thumbnail", json=body), 422, "validation_error")
    assert error["details"] and error["details"][0]["loc"]


def test_malformed_json_and_wrong_content_type(client: httpx.Client) -> None:
    bad_json = client.post(
        "/thumbnail", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_error(bad_json, 422, "validation_error")
    assert_error(client.post("/thumbnail", data={"mode": "fit"}), 422, "validation_error")
    assert_error(client.post("/upload", json={"file": "x"}), 422, "validation_error")
    assert_error(client.post("/upload", files={"other": ("a.png", b"x")}), 422)


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://localhost:8080/hook",
        "http://127.0.0.1/hook",
        "http://[::1]/hook",
        "http://192.168.1.20/hook",
        "http://[64:ff9b::7f00:1]/hook",  # NAT64 of 127.0.0.1
        "http://[2002:a9fe:a9fe::]/hook",  # 6to4 of the metadata address
    ],
)
def test_private_webhooks_are_refused(client: httpx.Client, url: str) -> None:
    error = assert_error(
        client.post("/thumbnail", json=inline(SMALL_PNG, webhook_url=url)),
        400,
        "webhook_url_refused",
    )
    # A literal IP is never resolved: only the guard can refuse it (not a DNS failure).
    assert "non-public" in error["message"] or "localhost" in url, error


def test_compat_route_bad_input(client: httpx.Client) -> None:
    text = {"file": ("notes.txt", b"just text", "text/plain")}
    assert_error(client.post("/upload", files=text), 400, "invalid_image")
    assert_error(
        client.post("/upload", files={"file": ("empty.jpg", b"", "image/jpeg")}),
        400,
        "invalid_image",
    )
    assert_error(
        client.post(
            "/jobs", json={"image_data": "!!", "operation": "resize", "width": 2, "height": 2}
        ),
        400,
        "invalid_base64",
    )
    assert_error(
        client.post("/jobs", json={"image_data": SMALL_PNG, "operation": "resize", "width": 2}),
        422,
        "validation_error",
    )
    assert_error(
        client.post(
            "/jobs", json={"image_data": SMALL_PNG, "operation": "rotate", "width": 2, "height": 2}
        ),
        422,
        "validation_error",
    )
    assert_error(client.get("/jobs/unknown"), 404, "job_not_found")
    assert_error(client.get("/jobs/unknown/download"), 404, "job_not_found")
    assert_error(client.get("/upload/unknown/status"), 404, "job_not_found")


def test_unknown_route_and_method_use_the_same_shape(client: httpx.Client) -> None:
    assert_error(client.get("/no/such/thing"), 404, "not_found")
    assert_error(client.delete("/thumbnail"), 405, "method_not_allowed")


def test_queue_full_is_429(
    request: pytest.FixtureRequest, backend_kind: str, tmp_path: Path
) -> None:
    slow = b64(encode(photo("chelsea").resize((3000, 2000)), quality=90))
    with (
        serve(backend_kind, request, tmp_path, workers=1, queue_capacity=1) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        statuses = [
            client.post("/thumbnail", json=inline(slow, mode="crop", width=100, height=100))
            for _ in range(4)
        ]
        assert statuses[0].status_code == 202
        refused = [response for response in statuses if response.status_code == 429]
        assert refused, [response.status_code for response in statuses]
        assert_error(refused[0], 429, "queue_full")
        assert refused[0].headers["retry-after"]
        batch = [
            ("images", (f"{n}.png", encode(Image.new("RGB", (4, 4)), "PNG"), "image/png"))
            for n in range(3)
        ]
        assert_error(client.post("/process-images", files=batch), 429, "queue_full")


@pytest.mark.parametrize("value", ["lots", "1e6", "0", "-5"])
def test_malformed_max_pixels_is_a_startup_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("SMARTTHUMB_MAX_PIXELS", value)
    with pytest.raises(ValueError, match="SMARTTHUMB_MAX_PIXELS") as raised:
        ApiSettings()
    assert repr(value) in str(raised.value)


def test_max_pixels_is_read_once_at_startup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMARTTHUMB_MAX_PIXELS", "100")
    with live_server(tmp_path) as server, httpx.Client(base_url=server.url) as client:
        assert server.settings.max_pixels == 100
        assert client.post("/thumbnail", json=inline(SMALL_PNG)).status_code == 202  # 64 px
        # Whatever the variable says later, requests use the value checked at start-up.
        monkeypatch.setenv("SMARTTHUMB_MAX_PIXELS", "not a number")
        big = b64(encode(Image.new("RGB", (20, 20), "red"), "PNG"))
        assert_error(client.post("/thumbnail", json=inline(big)), 413, "image_too_large")
        monkeypatch.setenv("SMARTTHUMB_MAX_PIXELS", "100000")
        assert_error(client.post("/thumbnail", json=inline(big)), 413, "image_too_large")


def test_uploads_in_flight_share_a_budget(tmp_path: Path) -> None:
    """A slow client's body counts against the budget as it arrives: the next big upload
    gets 503 + Retry-After until the first one is done, then goes through."""
    import socket
    from urllib.parse import urlsplit

    with live_server(tmp_path, max_upload_bytes=100_000, max_in_flight_bytes=150_000) as server:
        address = urlsplit(server.url)
        body = b'{"image_files": []}'.ljust(90_000)
        sent = 70_000
        slow = socket.create_connection((address.hostname, address.port), timeout=10)
        try:
            slow.sendall(
                b"POST /thumbnail HTTP/1.1\r\nHost: test\r\ncontent-type: application/json\r\n"
                + f"content-length: {len(body)}\r\n\r\n".encode()
                + body[:sent]
            )
            with httpx.Client(base_url=server.url, timeout=10) as client:
                deadline = time.monotonic() + 10
                while True:  # until the server has read the slow body's first 70 kB
                    busy = client.post(
                        "/thumbnail", content=body, headers={"content-type": "application/json"}
                    )
                    if busy.status_code == 503 or time.monotonic() > deadline:
                        break
                    time.sleep(0.05)
                assert_error(busy, 503, "server_busy")
                assert busy.headers["retry-after"] == "2"
                small = client.post("/thumbnail", json={"image_files": []})
                assert small.status_code == 400, "small bodies still fit in the budget"
                slow.sendall(body[sent:])
                answer = slow.recv(65536).decode(errors="replace")
                assert answer.startswith("HTTP/1.1 400"), answer[:200]
                after = client.post(
                    "/thumbnail", content=body, headers={"content-type": "application/json"}
                )
                assert after.status_code == 400, after.text  # no images: a 4xx, not "busy"
        finally:
            slow.close()


def test_the_in_flight_budget_must_hold_one_upload(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="MAX_IN_FLIGHT_BYTES must be at least"):
        ApiSettings(max_upload_bytes=1000, max_in_flight_bytes=999)
