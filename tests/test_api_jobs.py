"""Seed 000's contract over real HTTP: POST /thumbnail, GET /job/{id}, GET /job/{id}/image, on
both backends."""

from __future__ import annotations

import base64
import io
import time
import uuid
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
    file_server,
    runs_held,
    serve,
    wait_done,
)
from images import art_page, blank_page, photo, text_page
from PIL import Image


@pytest.fixture(scope="module")
def input_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("inputs")
    (root / "chapter").mkdir()
    for index, page in enumerate(
        [text_page(), art_page("astronaut"), art_page("coffee"), blank_page(), art_page("chelsea")]
    ):
        page.save(root / "chapter" / f"page-{index}.jpg", quality=88)
    return root


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, input_root: Path
) -> Iterator[LiveServer]:
    data = tmp_path_factory.mktemp("data")
    with serve(request.param, request, data, input_root=input_root) as running:
        yield running


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http


def astronaut_jpeg() -> str:
    return b64(encode(photo("astronaut"), quality=90))


def test_crop_job_runs_and_serves_its_image(client: httpx.Client, server: LiveServer) -> None:
    response = client.post(
        "/thumbnail",
        json={
            "mode": "crop",
            "width": 300,
            "height": 300,
            "image_files": [{"filename": "astronaut.jpg", "content_base64": astronaut_jpeg()}],
        },
    )
    assert response.status_code == 202, response.text
    accepted = response.json()
    job_id = accepted["job_id"]
    assert accepted["status"] in ("queued", "processing")
    assert accepted["job_url"] == f"{server.url}/job/{job_id}"
    assert accepted["image_url"] == f"{server.url}/job/{job_id}/image"
    assert accepted["expires_in_seconds"] == 7200
    assert accepted["webhook_enabled"] is False
    assert isinstance(accepted["pending_jobs"], int)

    job = wait_done(client, job_id)
    assert job["status"] == "done", job
    assert job["started_at"] and job["finished_at"] and job["expires_at"]
    assert 0 < job["expires_in_seconds"] <= 7200
    assert job["webhook"]["enabled"] is False
    result = job["result"]
    assert result["output_path"] == accepted["image_url"]  # a URL, never a server path
    assert result["composed_from"] == ["astronaut.jpg"]
    assert result["selected_page_index"] == 0
    assert result["fallback_used"] is False and result["worker_warning"] is None
    assert result["candidates"][0]["name"] == "astronaut.jpg"
    assert result["candidates"][0]["width"] == 512
    assert result["output"] == {**result["output"], "width": 300, "height": 300, "format": "jpeg"}

    image = client.get(f"/job/{job_id}/image")
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(image.content)) as thumbnail:
        assert thumbnail.size == (300, 300)


def test_base64_wrapped_as_the_base64_command_prints_it_is_accepted(client: httpx.Client) -> None:
    wrapped = base64.encodebytes(encode(photo("chelsea"), quality=85)).decode()  # 76 a line
    assert "\n" in wrapped.strip()
    response = client.post(
        "/thumbnail",
        json={
            "mode": "fit",
            "width": 90,
            "image_files": [{"filename": "chelsea.jpg", "content_base64": wrapped}],
        },
    )
    assert response.status_code == 202, response.text
    job = wait_done(client, response.json()["job_id"])
    assert job["status"] == "done" and job["result"]["output"]["width"] == 90, job


def test_pair_from_server_paths_under_the_input_root(client: httpx.Client) -> None:
    paths = [f"chapter/page-{index}.jpg" for index in range(5)]
    response = client.post("/thumbnail", json={"image_path": paths[0], "image_paths": paths[1:]})
    assert response.status_code == 202, response.text
    job = wait_done(client, response.json()["job_id"])
    assert job["status"] == "done", job
    assert job["inputs"] == paths
    result = job["result"]
    assert result["mode"] == "pair"
    assert result["output"]["width"] == 1200 and result["output"]["height"] == 675
    assert len(result["composed_from"]) == 2
    assert set(result["composed_from"]) <= set(paths)
    assert "chapter/page-3.jpg" not in result["composed_from"]  # the blank page
    assert len(result["candidates"]) == 5
    assert sum(candidate["selected"] for candidate in result["candidates"]) >= 1


def test_a_server_path_swapped_for_a_symlink_after_submit_cannot_lead_out_of_the_root(
    client: httpx.Client, input_root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "secret.jpg"  # 600x400: a thumbnail of it would be 64x43
    photo("coffee").save(outside)
    name = f"swap-{uuid.uuid4().hex[:8]}.jpg"
    photo("astronaut").save(input_root / name)  # 512x512
    response = client.post("/thumbnail", json={"image_paths": [name], "mode": "fit", "width": 64})
    assert response.status_code == 202, response.text
    (input_root / name).unlink()
    (input_root / name).symlink_to(outside)  # before the runner has even started, most likely
    job = wait_done(client, response.json()["job_id"])
    assert job["status"] == "done", job
    assert (job["result"]["output"]["width"], job["result"]["output"]["height"]) == (64, 64)


def test_image_conversions_are_cached_next_to_the_output(
    client: httpx.Client, server: LiveServer
) -> None:
    response = client.post(
        "/thumbnail",
        json={
            "mode": "fit",
            "width": 400,
            "image_files": [{"filename": "a.jpg", "content_base64": astronaut_jpeg()}],
        },
    )
    job_id = response.json()["job_id"]
    assert wait_done(client, job_id)["status"] == "done"

    first = client.get(f"/job/{job_id}/image", params={"format": "webp", "width": 100})
    assert first.status_code == 200
    assert first.headers["content-type"] == "image/webp"
    with Image.open(io.BytesIO(first.content)) as variant:
        assert variant.format == "WEBP" and variant.size == (100, 100)
    cached = list(server.data_dir.rglob("*.w100.q82.webp"))
    assert len(cached) == 1
    made_at = cached[0].stat().st_mtime_ns
    time.sleep(0.05)
    second = client.get(f"/job/{job_id}/image", params={"format": "webp", "width": 100})
    assert second.content == first.content
    assert cached[0].stat().st_mtime_ns == made_at  # served from disk, not encoded again

    jpg = client.get(f"/job/{job_id}/image", params={"format": "jpg", "quality": 40})
    assert jpg.headers["content-type"] == "image/jpeg"
    avif = client.get(f"/job/{job_id}/image", params={"format": "avif", "width": 5000})
    with Image.open(io.BytesIO(avif.content)) as variant:
        assert variant.size == (400, 400)  # never enlarged


def test_the_largest_avif_crop_is_made_at_the_default_memory_limits(client: httpx.Client) -> None:
    # 3162x3162 is the largest AVIF within a fifth of SMARTTHUMB_MAX_PIXELS' 50 MP: libaom
    # holds ~30 bytes a pixel, 8192x8192 took the runner to 2 GB.
    response = client.post(
        "/thumbnail",
        json={
            "mode": "crop",
            "width": 3162,
            "height": 3162,
            "upscale": True,
            "format": "avif",
            "image_files": [{"filename": "a.jpg", "content_base64": astronaut_jpeg()}],
        },
    )
    assert response.status_code == 202, response.text
    job = wait_done(client, response.json()["job_id"], timeout=180)
    assert job["status"] == "done", job
    assert job["result"]["fallback_used"] is False
    assert job["result"]["output"]["width"] == job["result"]["output"]["height"] == 3162


def _transparent_png() -> str:
    """Opaque red disc on fully transparent black (RGB 0,0,0 under alpha 0)."""
    image = Image.new("RGBA", (200, 200), (0, 0, 0, 0))
    image.paste((255, 0, 0, 255), (50, 50, 150, 150))
    return b64(encode(image, "PNG"))


def _fit_job(client: httpx.Client, content: str, filename: str, **spec: object) -> str:
    response = client.post(
        "/thumbnail",
        json={
            "mode": "fit",
            "width": 200,
            **spec,
            "image_files": [{"filename": filename, "content_base64": content}],
        },
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    assert wait_done(client, job_id)["status"] == "done"
    return job_id


def test_jpeg_variant_of_a_transparent_png_is_flattened_on_white(client: httpx.Client) -> None:
    job_id = _fit_job(client, _transparent_png(), "t.png", format="png")
    variants: list[dict[str, str | int]] = [{"format": "jpg"}, {"format": "jpg", "width": 100}]
    for params in variants:
        response = client.get(f"/job/{job_id}/image", params=params)
        assert response.status_code == 200, response.text
        with Image.open(io.BytesIO(response.content)) as variant:
            assert variant.format == "JPEG"
            corner = variant.convert("RGB").getpixel((0, 0))
            # White, as the runner does: not black.
            assert isinstance(corner, tuple) and min(corner) >= 250, corner
            middle = variant.convert("RGB").getpixel((variant.width // 2, variant.height // 2))
            assert isinstance(middle, tuple) and middle[0] > 200 and middle[1] < 60, middle
    webp = client.get(f"/job/{job_id}/image", params={"format": "webp"})
    with Image.open(io.BytesIO(webp.content)) as variant:
        pixel = variant.getpixel((0, 0))
        assert variant.mode == "RGBA" and isinstance(pixel, tuple) and pixel[3] == 0  # alpha kept


def test_png_variants_ignore_quality(client: httpx.Client, server: LiveServer) -> None:
    job_id = _fit_job(client, astronaut_jpeg(), "a.jpg", width=64)
    bodies = {
        client.get(f"/job/{job_id}/image", params={"format": "png", "quality": q}).content
        for q in (10, 50, 90)
    }
    assert len(bodies) == 1
    job_dir = next(path for path in server.data_dir.rglob(job_id) if path.is_dir())
    assert [path.name for path in job_dir.glob("thumbnail.w*.png")] == ["thumbnail.w64.png"]


def test_variants_per_job_are_capped(client: httpx.Client) -> None:
    from smartthumb.api.convert import MAX_VARIANTS

    job_id = _fit_job(client, astronaut_jpeg(), "a.jpg", width=64)
    for quality in range(1, MAX_VARIANTS + 1):
        response = client.get(f"/job/{job_id}/image", params={"format": "jpg", "quality": quality})
        assert response.status_code == 200, response.text
    refused = client.get(f"/job/{job_id}/image", params={"format": "jpg", "quality": 99})
    error = assert_error(refused, 429, "too_many_variants")
    assert str(MAX_VARIANTS) in error["message"]
    # What is cached stays served, and so does the image itself.
    again = client.get(f"/job/{job_id}/image", params={"format": "jpg", "quality": 5})
    assert again.status_code == 200
    assert client.get(f"/job/{job_id}/image").status_code == 200


def test_conversion_query_is_validated(client: httpx.Client) -> None:
    response = client.post(
        "/thumbnail",
        json={
            "mode": "fit",
            "width": 64,
            "image_files": [{"filename": "a.jpg", "content_base64": astronaut_jpeg()}],
        },
    )
    job_id = response.json()["job_id"]
    wait_done(client, job_id)
    assert_error(client.get(f"/job/{job_id}/image", params={"format": "gif"}), 422)
    assert_error(client.get(f"/job/{job_id}/image", params={"width": 0}), 422)
    assert_error(client.get(f"/job/{job_id}/image", params={"quality": 101}), 422)
    assert_error(client.get(f"/job/{job_id}/image", params={"colour": "red"}), 422)


def test_truncated_image_fails_the_job_with_a_clear_error(client: httpx.Client) -> None:
    whole = encode(photo("coffee"), quality=90)
    response = client.post(
        "/thumbnail",
        json={
            "mode": "crop",
            "width": 100,
            "height": 100,
            "image_files": [
                {"filename": "cut.jpg", "content_base64": b64(whole[: len(whole) // 3])}
            ],
        },
    )
    assert response.status_code == 202, response.text
    job = wait_done(client, response.json()["job_id"])
    assert job["status"] == "failed"
    assert job["error"] and job["result"] is None
    error = assert_error(client.get(f"/job/{job['job_id']}/image"), 422, "job_failed")
    assert job["error"] in error["message"]


def test_images_from_urls_and_urls_the_runner_would_refuse(
    request: pytest.FixtureRequest,
    backend_kind: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Local runners fetch from this machine; runner pods from their node's bridge address.
    host = "127.0.0.1" if backend_kind == "local" else request.getfixturevalue("real_node").gateway
    allowed = f"{host}/32"
    monkeypatch.setenv("SMARTTHUMB_ALLOW_PRIVATE_SOURCES", allowed)  # the API's and runners'
    pods = {"allow_private_sources": allowed} if backend_kind == "kubernetes" else {}
    pages = {
        f"page-{n}.jpg": encode(page, quality=88)
        for n, page in enumerate([text_page(), art_page("astronaut"), art_page("coffee")])
    }
    with (
        file_server(host, pages) as base,
        serve(backend_kind, request, tmp_path, **pods) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        urls = [f"{base}/{name}?sig=s3cr3t" for name in pages]
        accepted = client.post("/thumbnail", json={"image_urls": urls})
        assert accepted.status_code == 202, accepted.text
        job = wait_done(client, accepted.json()["job_id"], timeout=120)
        assert job["status"] == "done", job
        assert job["inputs"] == [f"{base}/{name}" for name in pages]  # no query: no secret
        assert job["result"]["output"]["width"] == 1200
        assert "s3cr3t" not in str(job)

        missing = client.post("/thumbnail", json={"image_urls": [f"{base}/gone.jpg"]})
        failed = wait_done(client, missing.json()["job_id"], timeout=120)
        assert failed["status"] == "failed" and "HTTP 404" in failed["error"], failed
        for url, words in (
            ("http://10.255.255.1/x.jpg?sig=s3cr3t", "non-public address"),
            ("ftp://example.com/x.jpg", "not an http(s):// URL"),
        ):
            error = assert_error(
                client.post("/thumbnail", json={"image_urls": [url]}), 400, "source_url_refused"
            )
            assert words in error["message"] and "s3cr3t" not in error["message"], error


def test_image_is_409_until_done_and_queue_position_is_reported(
    request: pytest.FixtureRequest, backend_kind: str, tmp_path: Path
) -> None:
    big = b64(encode(photo("chelsea").resize((3000, 2000)), quality=90))
    with (
        serve(backend_kind, request, tmp_path, workers=1) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        with runs_held(server):
            ids = [
                client.post(
                    "/thumbnail",
                    json={
                        "mode": "crop",
                        "width": 200,
                        "height": 200,
                        "image_files": [{"filename": f"{n}.jpg", "content_base64": big}],
                    },
                ).json()["job_id"]
                for n in range(4)
            ]
            last = client.get(f"/job/{ids[-1]}").json()
            assert last["status"] == "queued"
            assert last["queue_position"] >= 1 and last["pending_jobs"] >= 1
            assert_error(client.get(f"/job/{ids[-1]}/image"), 409, "job_not_finished")
        for job_id in ids:
            assert wait_done(client, job_id)["status"] == "done"
        assert client.get(f"/job/{ids[-1]}/image").status_code == 200


def test_cancel_stops_a_running_job_and_forgets_a_queued_one(
    request: pytest.FixtureRequest, backend_kind: str, tmp_path: Path
) -> None:
    big = b64(encode(photo("chelsea").resize((3000, 2000)), quality=90))
    crop = {"mode": "crop", "width": 200, "height": 200}
    with (
        serve(backend_kind, request, tmp_path, workers=1) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        with runs_held(server):
            ids = [
                client.post(
                    "/thumbnail",
                    json={
                        **crop,
                        "image_files": [{"filename": f"{n}.jpg", "content_base64": big}],
                    },
                ).json()["job_id"]
                for n in range(2)
            ]
            poll_until = time.monotonic() + 60
            while client.get(f"/job/{ids[0]}").json()["status"] != "processing":
                assert time.monotonic() < poll_until, "the first job never started"
                time.sleep(0.05)
            assert client.get(f"/job/{ids[1]}").json()["status"] == "queued"
        # Let go: a cancel waits for its run to be killed, which a stopped server never does.
        for job_id in ids:
            assert client.delete(f"/job/{job_id}").status_code == 204
            assert_error(client.get(f"/job/{job_id}"), 404, "job_not_found")
            assert_error(client.delete(f"/job/{job_id}"), 404, "job_not_found")
            deadline = time.monotonic() + 30
            while [path for path in server.data_dir.rglob(job_id) if path.is_dir()]:
                assert time.monotonic() < deadline, "its files stayed"
                time.sleep(0.1)
        # The slot is free again: a new job runs to the end.
        small = client.post(
            "/thumbnail",
            json={
                "mode": "fit",
                "width": 50,
                "image_files": [{"filename": "a.jpg", "content_base64": astronaut_jpeg()}],
            },
        ).json()["job_id"]
        assert wait_done(client, small, timeout=120)["status"] == "done"


def test_unknown_and_expired_jobs_are_404(
    request: pytest.FixtureRequest, backend_kind: str, tmp_path: Path
) -> None:
    with (
        serve(backend_kind, request, tmp_path, ttl_s=0.5, sweep_interval_s=0.2) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        assert_error(client.get("/job/nope"), 404, "job_not_found")
        assert_error(client.get("/job/nope/image"), 404, "job_not_found")
        job_id = client.post(
            "/thumbnail",
            json={
                "mode": "fit",
                "width": 50,
                "image_files": [{"filename": "a.jpg", "content_base64": astronaut_jpeg()}],
            },
        ).json()["job_id"]
        wait_done(client, job_id)
        deadline = time.monotonic() + 15
        while client.get(f"/job/{job_id}").status_code != 404:
            assert time.monotonic() < deadline, "the job never expired"
            time.sleep(0.2)
        assert_error(client.get(f"/job/{job_id}/image"), 404, "job_not_found")
