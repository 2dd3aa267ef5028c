"""The compatibility routes of seeds 001-004 over real HTTP, each ending in a real image, on
both backends."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from apiserver import BACKENDS, LiveServer, b64, encode, serve
from images import photo
from PIL import Image


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    with serve(request.param, request, tmp_path_factory.mktemp("data")) as running:
        yield running


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http


def poll(
    client: httpx.Client, path: str, done: Callable[[dict], bool], timeout: float = 60
) -> dict:
    """Polls a status document the way these seeds' clients do (bounded)."""
    document: dict = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        document = client.get(path).json()
        if done(document):
            return document
        time.sleep(0.1)
    raise AssertionError(f"{path} did not finish: {document}")


def image_of(response: httpx.Response) -> Image.Image:
    assert response.status_code == 200, response.text
    return Image.open(io.BytesIO(response.content))


def jpeg(name: str, size: tuple[int, int] | None = None) -> bytes:
    image = photo(name)
    return encode(image.resize(size) if size else image, quality=90)


def test_seed_001_004_upload_gives_an_undistorted_300x300_and_variants(
    client: httpx.Client,
) -> None:
    wide = jpeg("coffee", (1200, 400))
    response = client.post("/upload", files={"file": ("wide.jpg", wide, "image/jpeg")})
    assert response.status_code == 202, response.text
    accepted = response.json()
    job_id = accepted["id"]
    assert accepted["task_id"] == job_id and accepted["filename"] == "wide.jpg"
    assert accepted["status_url"] == f"/upload/{job_id}/status"
    assert accepted["result_url"] == f"/upload/{job_id}/result"
    assert [entry["id"] for entry in accepted["files"]] == [job_id]

    status = poll(
        client, accepted["status_url"], lambda doc: doc["status"] in ("SUCCESS", "FAILURE")
    )
    assert status["status"] == "SUCCESS", status
    result = client.get(accepted["result_url"]).json()
    assert result["status"] == "SUCCESS"
    with image_of(client.get(result["result"]["original"])) as main:
        assert main.size == (300, 300)
    with image_of(client.get(result["result"]["thumbnail"])) as small:
        assert small.size == (150, 150)
    compressed = client.get(result["result"]["resized_compressed"])
    with image_of(compressed) as variant:
        assert variant.size == (300, 300) and variant.format == "JPEG"


def test_upload_of_several_files_makes_a_batch(client: httpx.Client) -> None:
    files = [("file", (f"{name}.jpg", jpeg(name), "image/jpeg")) for name in ("rocket", "camera")]
    accepted = client.post("/upload", files=files).json()
    assert len(accepted["files"]) == 2
    batch = poll(client, accepted["batch_url"], lambda doc: doc["progress"]["completed"] == 2)
    assert batch["status"] == "completed"
    assert {entry["originalName"] for entry in batch["files"]} == {"rocket.jpg", "camera.jpg"}


def test_seed_003_process_images_batch_with_a_broken_file(client: httpx.Client) -> None:
    whole = jpeg("astronaut")
    files = [
        ("images", ("a.jpg", whole, "image/jpeg")),
        ("images", ("b.png", encode(photo("chelsea"), "PNG"), "image/png")),
        ("images", ("cut.jpg", whole[:2000], "image/jpeg")),  # a header, then nothing
    ]
    response = client.post("/process-images", files=files)
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["totalFiles"] == 3
    assert accepted["statusUrl"] == f"/batches/{accepted['batchId']}"

    def finished(doc: dict) -> bool:
        return doc["progress"]["completed"] + doc["progress"]["failed"] == 3

    batch = poll(client, accepted["statusUrl"], finished)
    assert batch["status"] == "completed-with-errors"
    assert batch["progress"] == {"total": 3, "completed": 2, "failed": 1, "active": 0, "waiting": 0}
    by_name = {entry["originalName"]: entry for entry in batch["files"]}
    assert by_name["cut.jpg"]["state"] == "failed" and by_name["cut.jpg"]["failedReason"]
    for name, source_width in (("a.jpg", 512), ("b.png", 451)):
        entry = by_name[name]
        assert entry["state"] == "completed" and entry["failedReason"] is None
        with image_of(client.get(entry["result"]["outputPath"])) as image:
            assert image.format == "JPEG" and image.mode == "L"  # grayscale JPEG
            assert image.width == min(512, source_width)  # 512 wide, never enlarged

    single = client.get(f"/jobs/{by_name['a.jpg']['jobId']}").json()
    assert single["jobId"] == by_name["a.jpg"]["jobId"]
    assert single["state"] == "completed" and single["progress"] == 100
    assert single["result"]["originalName"] == "a.jpg"
    assert client.get("/batches/unknown").status_code == 404


def test_seed_002_resize_and_thumbnail(client: httpx.Client) -> None:
    png = encode(photo("astronaut").resize((1920, 1080)), "PNG")
    resize = client.post(
        "/jobs",
        json={
            "image_data": b64(png),
            "operation": "resize",
            "width": 200,
            "height": 200,
        },
    )
    assert resize.status_code == 202, resize.text
    accepted = resize.json()
    assert accepted["status"] == "pending" and accepted["message"]
    job = poll(
        client, f"/jobs/{accepted['job_id']}", lambda doc: doc["status"] in ("completed", "failed")
    )
    assert job["status"] == "completed" and job["operation"] == "resize"
    assert job["output_format"] == "png"  # the input's format when none is asked for
    assert job["output_path"] == accepted["download_url"]
    with image_of(client.get(accepted["download_url"])) as image:
        assert image.size == (200, 200) and image.format == "PNG"

    thumbnail = client.post(
        "/jobs",
        json={
            "image_data": b64(png),
            "operation": "thumbnail",
            "width": 200,
            "height": 200,
            "output_format": "jpeg",
        },
    ).json()
    poll(client, f"/jobs/{thumbnail['job_id']}", lambda doc: doc["status"] == "completed")
    with image_of(client.get(thumbnail["download_url"])) as image:
        assert image.size == (200, 112) and image.format == "JPEG"  # aspect kept


def test_seed_002_small_image_is_not_upscaled(client: httpx.Client) -> None:
    tiny = encode(Image.new("RGB", (1, 1), "red"), "PNG")
    accepted = client.post(
        "/jobs",
        json={
            "image_data": b64(tiny),
            "operation": "thumbnail",
            "width": 200,
            "height": 200,
        },
    ).json()
    poll(client, f"/jobs/{accepted['job_id']}", lambda doc: doc["status"] == "completed")
    with image_of(client.get(accepted["download_url"])) as image:
        assert image.size == (1, 1)
