"""Bad input of every kind gets a 4xx with the one JSON error shape; never a 500."""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from apiserver import (
    BACKENDS,
    LiveServer,
    assert_error,
    b64,
    encode,
    live_server,
    runs_held,
    serve,
    wait_done,
)
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
    error = assert_error(response, 422 if code is None else 400, code)
    if code == "invalid_base64":
        assert error["message"] == "x.jpg: content_base64 is not valid base64", error


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
    error = assert_error(
        client.post(
            "/jobs", json={"image_data": "!!", "operation": "resize", "width": 2, "height": 2}
        ),
        400,
        "invalid_base64",
    )
    # Named by the field this contract has (seed 000's content_base64 is not one of them).
    assert error["message"] == "image_data: the value is not valid base64", error
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


def test_seed_002_submit_takes_valid_json_only_and_says_what_is_wrong(
    client: httpx.Client,
) -> None:
    """POST /jobs: a valid JSON request is queued (the API's fast path); anything else gets
    FastAPI's 422, naming what is wrong."""
    fields = {"image_data": SMALL_PNG, "operation": "resize", "width": 2, "height": 2}
    as_json = {"content-type": "application/json"}
    for body in (b"{not json", b"[]", b'"a string"', b""):
        response = client.post("/jobs", content=body, headers=as_json)
        assert_error(response, 422, "validation_error")
    error = assert_error(client.post("/jobs", json={**fields, "colour": "red"}), 422)
    assert "colour" in str(error["details"]), error
    assert_error(client.post("/jobs", data={"operation": "resize"}), 422, "validation_error")
    with_charset = {"content-type": "application/json; charset=utf-8"}
    accepted = client.post("/jobs", content=json.dumps(fields), headers=with_charset)
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["status"] == "pending"
    assert client.get(f"/jobs/{accepted.json()['job_id']}").status_code == 200


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
        runs_held(server),  # the first job cannot finish and free the queue meanwhile
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


ONE_PIXEL_JPEG = b64(encode(photo("astronaut").resize((1, 1)), quality=90))


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        # 67 MP decoded from a 1x1 source: refused like a 67 MP source would be.
        ({"mode": "resize", "width": 8192, "height": 8192}, "a 8192x8192 jpeg output is 67.1 MP"),
        ({"mode": "crop", "width": 8000, "height": 7000, "upscale": True}, "56.0 MP"),
        ({"mode": "pair", "width": 8192, "height": 8192, "format": "png"}, "8192x8192 png"),
        # AVIF's encoder holds ~30 bytes a pixel: a fifth of the pixels.
        ({"mode": "resize", "width": 4000, "height": 4000, "format": "avif"},
         "above the limit of 10.0 MP for avif (1/5 of SMARTTHUMB_MAX_PIXELS)"),
    ],
)  # fmt: skip
def test_outputs_over_the_pixel_limit_are_refused_at_submit(
    client: httpx.Client, spec: dict, needle: str
) -> None:
    body = {**inline(ONE_PIXEL_JPEG), "width": None, **spec}
    error = assert_error(client.post("/thumbnail", json=body), 422, "output_too_large")
    assert needle in error["message"]
    assert error["details"] == []


def test_seed_002_resize_over_the_pixel_limit_is_refused(client: httpx.Client) -> None:
    body = {"image_data": ONE_PIXEL_JPEG, "operation": "resize", "width": 8192, "height": 8192}
    error = assert_error(client.post("/jobs", json=body), 422, "output_too_large")
    assert "above the limit of 50.0 MP for jpeg (SMARTTHUMB_MAX_PIXELS)" in error["message"]


def test_an_enlargement_over_the_pixel_limit_fails_the_job_saying_why(
    client: httpx.Client,
) -> None:
    # fit: the height follows the source's aspect, so only the runner knows the size.
    body = {**inline(ONE_PIXEL_JPEG), "width": 8192, "upscale": True}
    response = client.post("/thumbnail", json=body)
    assert response.status_code == 202, response.text
    job = wait_done(client, response.json()["job_id"])
    assert job["status"] == "failed", job
    assert "a 8192x8192 jpeg output is 67.1 MP, above the limit of 50.0 MP" in job["error"]


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"width": 8192, "aspect": "9999:1"}, "(aspect 9999:1 makes 8192x1)"),
        ({"height": 16, "aspect": "9999:1"}, "(aspect 9999:1 makes 159984x16)"),
    ],
)
def test_crop_aspect_that_degenerates_is_refused(
    client: httpx.Client, spec: dict, needle: str
) -> None:
    body = {**inline(b64(encode(photo("astronaut")))), "mode": "crop", "width": None, **spec}
    error = assert_error(client.post("/thumbnail", json=body), 422, "validation_error")
    assert "the side completed from aspect must come out 16 to 8192 px" in error["message"]
    assert needle in error["message"]


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


def test_variants_over_the_output_limit_are_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMARTTHUMB_MAX_PIXELS", "1000000")  # the API's and the runners'
    with live_server(tmp_path) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        body = {**inline(b64(encode(photo("astronaut")))), "width": 600, "upscale": True}
        job_id = client.post("/thumbnail", json=body).json()["job_id"]
        assert wait_done(client, job_id)["status"] == "done"  # a 600x600 JPEG: 0.36 MP
        # An AVIF may have a fifth of SMARTTHUMB_MAX_PIXELS: 200000 pixels.
        refused = client.get(f"/job/{job_id}/image", params={"format": "avif"})
        error = assert_error(refused, 422, "variant_too_large")
        assert error["message"] == (
            "a 600x600 avif output is 0.4 MP, above the limit of 0.2 MP for avif (1/5 of "
            "SMARTTHUMB_MAX_PIXELS); ask for a smaller size or another format (width=447 fits)"
        )
        assert not list(server.data_dir.rglob("*.avif"))
        fits = client.get(f"/job/{job_id}/image", params={"format": "avif", "width": 447})
        assert fits.status_code == 200, fits.text
        with Image.open(io.BytesIO(fits.content)) as variant:
            assert variant.format == "AVIF" and variant.size == (447, 447)
        # JPEG may have all of it: the job's own format converts at full size.
        assert client.get(f"/job/{job_id}/image", params={"quality": 50}).status_code == 200


def test_conversions_past_the_bound_get_503_with_retry_after(tmp_path: Path) -> None:
    from smartthumb.api import convert

    with live_server(tmp_path) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        job_id = client.post("/thumbnail", json=inline(b64(encode(photo("astronaut"))))).json()[
            "job_id"
        ]
        assert wait_done(client, job_id)["status"] == "done"
        image = f"/job/{job_id}/image"
        assert client.get(image, params={"format": "png"}).status_code == 200  # now cached
        # As many conversions as the bound allows are in flight (held here, in-process).
        for _ in range(convert.MAX_CONVERSIONS):
            assert convert._conversions.acquire(blocking=False)
        try:
            busy = client.get(image, params={"format": "webp"})
            error = assert_error(busy, 503, "server_busy")
            assert busy.headers["Retry-After"] == "2"
            assert f"{convert.MAX_CONVERSIONS} image variants are being made" in error["message"]
            # A cached variant and the image itself need no conversion.
            assert client.get(image, params={"format": "png"}).status_code == 200
            assert client.get(image).status_code == 200
        finally:
            for _ in range(convert.MAX_CONVERSIONS):
                convert._conversions.release()
        assert client.get(image, params={"format": "webp"}).status_code == 200


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
