"""The operator on the real control plane (kwok plays the kubelet: pods end as told by their
annotations and labels, see tests/kubecluster.py): every path of a ThumbnailJob's life."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import poll
from kubecluster import KubeCluster
from operatorharness import Cluster, OperatorHandle, result_json, run_operator, simulated
from operatorharness import thumbnail_job as tj

pytestmark = pytest.mark.cluster


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    """The shared volume, as the operator sees it: one photo, some pages."""
    root = tmp_path / "volume"
    (root / "in").mkdir(parents=True)
    (root / "in" / "photo.jpg").write_bytes(b"\xff\xd8 not read by kwok's pods")
    return root


@pytest.fixture
def cluster(api: Any, namespace: str, installed_crd: str) -> Cluster:
    return Cluster(api, namespace)


@pytest.fixture
def operator(kube_cluster: KubeCluster, volume: Path) -> Iterator[OperatorHandle]:
    with run_operator(kube_cluster, volume) as handle:
        yield handle


def test_success_path(kube_cluster: KubeCluster, cluster: Cluster, operator: OperatorHandle):
    cluster.create(tj("photo", runnerPod=simulated(result_json())))
    status = cluster.wait_phase("photo", "Succeeded", "Failed")
    assert status["phase"] == "Succeeded", status
    Path("/tmp/x/status.json").write_text(json.dumps(status, indent=1) + "\n" + json.dumps(cluster.events("photo"), indent=1) + "\n" + json.dumps([j.to_dict() for j in cluster.jobs()], indent=1, default=str))
