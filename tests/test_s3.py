"""Object storage on a real S3-compatible server (versitygw): the store itself, then the API and
the operator with SMARTTHUMB_STORAGE=s3, runner pods on the real node reading presigned URLs
(and plain URL sources) and writing their thumbnail with a presigned PUT."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from apiserver import b64, encode, file_server, kube_server, wait_done
from conftest import poll
from images import photo
from kubecluster import KubeCluster
from kubestack import example, real_node_operator, volume_namespace
from obstore.exceptions import PermissionDeniedError
from operatorharness import Cluster
from operatorharness import thumbnail_job as tj
from PIL import Image
from realnode import RealNode
from s3server import BUCKET, S3Server
from smartthumb.operator.kube.backend import KubernetesBackend
from smartthumb.operator.kube.objectstore import ObjectStore
from smartthumb.operator.kube.settings import StorageSettings
from smartthumb.operator.kube.storage import ObjectStorage

JPEG = encode(photo("astronaut"), quality=90)


def store_settings(server: S3Server, host: str = "127.0.0.1", **changes: Any) -> StorageSettings:
    return StorageSettings.model_validate({**server.settings(host), **changes})


def test_the_store_puts_signs_lists_and_deletes(s3_server: S3Server, tmp_path: Path) -> None:
    store = ObjectStore(store_settings(s3_server))
    store.put("smartthumb/ns/a/inputs/000.jpg", JPEG)
    assert store.exists("smartthumb/ns/a/inputs/000.jpg")
    assert not store.exists("smartthumb/ns/a/nothing.jpg")
    assert httpx.get(store.url_to_get("smartthumb/ns/a/inputs/000.jpg")).content == JPEG
    put = httpx.put(
        store.url_to_put("smartthumb/ns/a/thumbnail.jpg"),
        content=b"thumb",
        headers={"Content-Type": "image/jpeg"},
    )
    assert put.status_code == 200
    assert store.download("smartthumb/ns/a/thumbnail.jpg", tmp_path / "copy.jpg")
    assert (tmp_path / "copy.jpg").read_bytes() == b"thumb"
    assert not store.download("smartthumb/ns/a/gone.jpg", tmp_path / "gone.jpg")
    assert sorted(key for key, _ in store.listing("smartthumb/ns/a/")) == [
        "smartthumb/ns/a/inputs/000.jpg",
        "smartthumb/ns/a/thumbnail.jpg",
    ]
    assert store.problem() is None

    # The operator's side: a job folder no ThumbnailJob owns goes once it is old enough.
    storage = ObjectStorage(store_settings(s3_server))
    assert storage.remove_orphans({("ns", "a")}, 0) == []
    assert storage.remove_orphans(set(), 3600) == []
    assert storage.remove_orphans(set(), 0) == ["ns/a"]
    assert store.listing("smartthumb/ns/a/") == []


def test_a_wrong_secret_is_a_readiness_problem(s3_server: S3Server) -> None:
    store = ObjectStore(store_settings(s3_server, s3_secret_access_key="not-the-secret"))
    assert f"bucket {BUCKET} not writable" in (store.problem() or "")
    with pytest.raises(PermissionDeniedError):
        store.put("x", b"x")
    signed = store.url_to_get("x")
    assert httpx.get(signed).status_code == 403


@pytest.fixture
def photo_server(real_node: RealNode) -> Iterator[str]:
    """A URL source pods can reach: plain HTTP on the node's bridge address."""
    with file_server(real_node.gateway, {"astronaut.jpg": JPEG}) as url:
        yield url


@pytest.mark.cluster
@pytest.mark.node
@pytest.mark.parametrize("redirect", [False, True], ids=["streamed", "redirected"])
def test_the_api_on_kubernetes_with_object_storage(
    request: pytest.FixtureRequest,
    s3_server: S3Server,
    real_node: RealNode,
    tmp_path: Path,
    redirect: bool,
) -> None:
    storage = s3_server.settings(real_node.gateway)
    with (
        kube_server(
            request,
            tmp_path / "volume",
            ttl_s=2,
            sweep_interval_s=0.5,
            cache_dir=tmp_path / "cache",
            allow_private_sources=f"{real_node.gateway}/32",
            s3_redirect=redirect,
            **storage,
        ) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        accepted = client.post(
            "/thumbnail",
            json={
                "mode": "crop",
                "width": 300,
                "height": 300,
                "image_files": [{"filename": "astronaut.jpg", "content_base64": b64(JPEG)}],
            },
        )
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["job_id"]
        assert isinstance(server.backend, KubernetesBackend)
        prefix = f"smartthumb/{server.backend.settings.namespace}/{job_id}/"
        assert f"{prefix}inputs/000.jpg" in s3_server.objects()
        job = wait_done(client, job_id, timeout=120)
        assert job["status"] == "done", job
        assert job["inputs"] == ["astronaut.jpg"]
        assert f"{prefix}thumbnail.jpg" in s3_server.objects()
        image = client.get(f"/job/{job_id}/image")
        if redirect:  # to the bucket itself, presigned
            assert image.status_code == 307, image.text
            assert image.headers["location"].startswith(f"{storage['s3_endpoint']}/{BUCKET}/")
            assert not (tmp_path / "cache" / job_id).exists()
            image = httpx.get(image.headers["location"])
        assert image.status_code == 200
        with Image.open(io.BytesIO(image.content)) as thumbnail:
            assert thumbnail.size == (300, 300)
        webp = client.get(f"/job/{job_id}/image", params={"format": "webp", "width": 100})
        assert webp.headers["content-type"] == "image/webp"  # conversions are the API's
        assert (tmp_path / "cache" / job_id).is_dir()
        poll(
            "the TTL to delete the job",
            lambda: client.get(f"/job/{job_id}").status_code == 404,
            timeout=30,
        )
        poll(
            "its objects to go",
            lambda: not [key for key in s3_server.objects() if key.startswith(prefix)],
            timeout=30,
        )
        poll("the API's copies to go", lambda: not (tmp_path / "cache" / job_id).exists())


@pytest.fixture
def s3_operator(
    kube_cluster: KubeCluster,
    real_node: RealNode,
    s3_server: S3Server,
    installed_crd: str,
    tmp_path: Path,
) -> Iterator[Cluster]:
    with (
        kube_cluster.api_client() as api,
        volume_namespace(api, tmp_path) as namespace,
        real_node_operator(
            kube_cluster,
            real_node,
            tmp_path,
            namespace,
            allow_private_sources=f"{real_node.gateway}/32",
            **s3_server.settings(real_node.gateway),
        ),
    ):
        yield Cluster(api, namespace)


@pytest.mark.cluster
@pytest.mark.node
def test_thumbnailjobs_with_s3_and_url_sources_run_on_real_pods(
    s3_operator: Cluster, s3_server: S3Server, real_node: RealNode, photo_server: str
) -> None:
    cluster = s3_operator
    store = ObjectStore(store_settings(s3_server))
    [from_s3] = example("s3")  # as documented, the bucket named as this server's
    [source] = from_s3["spec"]["sources"]
    source["s3"]["bucket"] = BUCKET
    store.put(source["s3"]["key"], JPEG)
    cluster.create(from_s3)
    cluster.create(
        tj(
            "from-url",
            mode="fit",
            width=90,
            sources=[{"url": f"{photo_server}/astronaut.jpg?sig=s3cr3t"}],
        )
    )
    for name, size in (("from-s3", (256, 256)), ("from-url", (90, 90))):
        status = cluster.finished(name, timeout=120)
        assert status["phase"] == "Succeeded", status
        key = status["result"]["output"]
        assert key == f"smartthumb/{cluster.namespace}/{name}/thumbnail.jpg"
        copy = Path(s3_server.root / BUCKET / key)
        with Image.open(copy) as thumbnail:
            assert thumbnail.size == size
    # The job shows its sources without the query (presigned and user URLs carry secrets).
    body = cluster.get("from-url")
    assert body is not None and "s3cr3t" not in str(body.get("status"))


@pytest.mark.cluster
@pytest.mark.node
def test_bad_sources_fail_the_job_with_the_reason(
    s3_operator: Cluster, real_node: RealNode
) -> None:
    cluster = s3_operator
    cluster.create(
        tj(
            "missing",
            mode="fit",
            width=50,
            sources=[{"s3": {"bucket": BUCKET, "key": "no/such.jpg"}}],
        )
    )
    cluster.create(
        tj(
            "private",
            mode="fit",
            width=50,
            sources=[{"url": "http://10.255.255.1/x.jpg?sig=s3cr3t"}],
        )
    )
    missing = cluster.finished("missing", timeout=30)
    assert (missing["phase"], missing["failureReason"]) == ("Failed", "InputNotFound"), missing
    assert "s3://thumbs/no/such.jpg does not exist" in missing["message"]
    assert not missing.get("attempts")  # refused before any pod
    private = cluster.finished("private", timeout=120)
    assert (private["phase"], private["failureReason"]) == ("Failed", "BadInput"), private
    assert "http://10.255.255.1/x.jpg" in private["message"]
    assert "s3cr3t" not in private["message"]
