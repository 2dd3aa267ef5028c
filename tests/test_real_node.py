"""Real pods on the real node (tests/realnode.py): the images run, the kernel's OOM killer
ends a pod whose memory limit is too small, the operator's ladder and fallback then make a
real thumbnail, and every runner pod passes the Pod Security "restricted" profile."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import poll
from images import art_page, blank_page, save_photo, text_page, write_pages
from kubecluster import KubeCluster
from kubernetes import client
from kubernetes.client.rest import ApiException
from kubestack import claim_volume, real_node_operator
from operatorharness import Cluster, OperatorHandle
from operatorharness import thumbnail_job as tj
from PIL import Image
from realnode import NODE_NAME, REAL_NODE_POD, RealNode

pytestmark = [pytest.mark.cluster, pytest.mark.node]


@pytest.fixture(scope="module")
def volume() -> Iterator[Path]:
    """The shared volume: a host directory the runner pods (uid 65532) can read, mounted
    through a PersistentVolume (hostPath volumes are not allowed in "restricted")."""
    root = Path(tempfile.mkdtemp(prefix="st-volume-", dir="/tmp"))
    root.chmod(0o755)
    photos = root / "photos"
    photos.mkdir()
    save_photo(photos, "astronaut")
    save_photo(photos, "astronaut", size=(6000, 6000), fmt="PNG", suffix="png")
    save_photo(photos, "astronaut", size=(6000, 6000))
    (root / "chapter").mkdir()
    write_pages(
        root / "chapter",
        [text_page(), art_page("coffee"), art_page("astronaut"), blank_page(), art_page("chelsea")],
    )
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def restricted(api: Any, namespace: str, volume: Path) -> Iterator[str]:
    """The test namespace under Pod Security "restricted", with a claim on the volume."""
    pv = claim_volume(api, namespace, volume)
    yield namespace
    client.CoreV1Api(api).delete_persistent_volume(pv)


@pytest.fixture
def cluster(api: Any, restricted: str, installed_crd: str) -> Cluster:
    return Cluster(api, restricted)


@pytest.fixture
def operator(
    kube_cluster: KubeCluster, real_node: RealNode, volume: Path, restricted: str
) -> Iterator[OperatorHandle]:
    with real_node_operator(kube_cluster, real_node, volume, restricted) as handle:
        yield handle


def output(volume: Path, status: dict[str, Any]) -> Image.Image:
    path = volume / status["result"]["output"]
    assert path.is_file(), path
    image = Image.open(path)
    image.load()
    return image


def test_the_namespace_refuses_pods_outside_the_restricted_profile(
    api: Any, restricted: str
) -> None:
    with pytest.raises(ApiException) as refused:
        client.CoreV1Api(api).create_namespaced_pod(
            restricted,
            {
                "metadata": {"name": "loose"},
                "spec": {**REAL_NODE_POD, "containers": [{"name": "c", "image": "x:1"}]},
            },
        )
    assert refused.value.status == 403 and "restricted" in refused.value.body


def test_a_real_pod_crops_a_real_photo(
    cluster: Cluster, operator: OperatorHandle, volume: Path
) -> None:
    cluster.create(
        tj("astronaut", sources=[{"path": "photos/astronaut-512x512.jpg"}], timeoutSeconds=120)
    )
    status = cluster.finished("astronaut", timeout=120)
    assert status["phase"] == "Succeeded", status
    assert status["result"]["method"].startswith("crop:")
    assert (status["result"]["width"], status["result"]["height"]) == (300, 300)
    image = output(volume, status)
    assert (image.format, image.size) == ("JPEG", (300, 300))
    [pod] = cluster.pods()
    assert pod.spec.node_name == NODE_NAME
    terminated = pod.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 0 and json.loads(terminated.message)["output"]["width"] == 300


def test_a_real_pod_pairs_real_pages(
    cluster: Cluster, operator: OperatorHandle, volume: Path
) -> None:
    pages = sorted(p.relative_to(volume) for p in (volume / "chapter").iterdir())
    cluster.create(
        tj(
            "chapter",
            mode="pair",
            width=800,
            height=None,
            timeoutSeconds=120,
            sources=[{"path": str(page)} for page in pages],
        )
    )
    status = cluster.finished("chapter", timeout=120)
    assert status["phase"] == "Succeeded", status
    assert len(status["result"]["selected"]) == 2
    assert output(volume, status).size == (800, 450)


def test_a_real_oom_kill_is_retried_with_more_memory(
    cluster: Cluster, operator: OperatorHandle, volume: Path
) -> None:
    # A 6000x6000 PNG (no reduced decoding): the main runner is OOM-killed at 170Mi and runs
    # at 190Mi on this node, so 128Mi is too little and the ladder has room.
    cluster.create(
        tj(
            "big",
            sources=[{"path": "photos/astronaut-6000x6000.png"}],
            timeoutSeconds=120,
            resources={"memory": "128Mi", "maxMemory": "512Mi", "fallbackMemory": "128Mi"},
        )
    )
    status = cluster.finished("big", timeout=180)
    assert status["phase"] == "Succeeded", status
    runs = [(a["runner"], a["memory"], a["outcome"]) for a in status["attempts"]]
    assert runs[0] == ("main", "128Mi", "OOMKilled")
    assert runs[-1][0] == "main" and runs[-1][2] == "Succeeded"
    assert "OOMKilled by the kernel" in status["attempts"][0]["message"]
    assert output(volume, status).size == (300, 300)


def test_a_real_oom_kill_at_the_top_falls_back_to_the_light_image(
    cluster: Cluster, operator: OperatorHandle, volume: Path, real_node: RealNode
) -> None:
    # Measured on this node with this photo (a memory limit per pod, 4Mi apart): the main
    # runner (OpenCV, the face model) is OOM-killed at 36Mi and runs at 40Mi; the light
    # fallback is killed at 28Mi and runs at 32Mi. (RSS is larger, 87 and 54 MB: under a limit
    # the kernel reclaims the libraries' file pages first.)
    cluster.create(
        tj(
            "tight",
            sources=[{"path": "photos/astronaut-6000x6000.jpg"}],
            timeoutSeconds=120,
            resources={"memory": "34Mi", "maxMemory": "34Mi", "fallbackMemory": "34Mi"},
        )
    )
    status = cluster.finished("tight", timeout=180)
    assert status["phase"] == "Succeeded", status
    runs = [(a["runner"], a["memory"], a["outcome"]) for a in status["attempts"]]
    assert runs == [("main", "34Mi", "OOMKilled"), ("fallback", "34Mi", "Succeeded")]
    assert status["result"]["fallbackUsed"] is True
    assert cluster.conditions("tight")["FallbackUsed"]["status"] == "True"
    assert output(volume, status).size == (300, 300)
    fallback = next(
        p for p in cluster.pods() if p.metadata.labels.get("smartthumb.dev/runner") == "fallback"
    )
    assert fallback.spec.containers[0].image == real_node.images["operator"]


def test_nothing_of_the_jobs_is_left_on_the_node_after_the_ttl(
    cluster: Cluster, operator: OperatorHandle, real_node: RealNode
) -> None:
    cluster.create(
        tj(
            "brief",
            sources=[{"path": "photos/astronaut-512x512.jpg"}],
            ttlSecondsAfterFinished=1,
            timeoutSeconds=120,
        )
    )
    cluster.finished("brief", timeout=120)
    poll(
        "the job and its pods to go",
        lambda: cluster.get("brief") is None and not cluster.pods(),
        timeout=60,
    )
    # The kubelet's container garbage collection runs once a minute: give it two rounds.
    poll(
        "the node to remove their containers",
        lambda: not real_node.containers(cluster.namespace),
        timeout=150,
    )
