"""The pieces a test needs to run real thumbnails on the real node: a namespace under Pod
Security "restricted" whose claim "thumbs" is a host folder (the shared volume), and the
operator running that namespace's ThumbnailJobs as real runner pods."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from conftest import poll
from kubecluster import KubeCluster
from kubernetes import client
from operatorharness import OperatorHandle, run_operator
from realnode import REAL_NODE_POD, RealNode

RESTRICTED = "pod-security.kubernetes.io/enforce"
CLAIM = "thumbs"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def example(name: str) -> list[dict[str, Any]]:
    """The documents of examples/<name>.yaml, as a user applies them."""
    return [doc for doc in yaml.safe_load_all((EXAMPLES / f"{name}.yaml").read_text()) if doc]


def claim_volume(api: Any, namespace: str, volume: Path) -> str:
    """Put `namespace` under "restricted" and give it the claim "thumbs" on `volume` (a PV,
    since hostPath volumes are not allowed in "restricted"); the PV's name, to delete."""
    volume.chmod(0o755)  # runner pods run as uid 65532
    core = client.CoreV1Api(api)
    core.patch_namespace(namespace, {"metadata": {"labels": {RESTRICTED: "restricted"}}})
    pv = f"thumbs-{namespace}"
    core.create_persistent_volume(
        {
            "metadata": {"name": pv},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteMany"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": {"path": str(volume), "type": "Directory"},
                "claimRef": {"namespace": namespace, "name": CLAIM},
            },
        }
    )
    core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "metadata": {"name": CLAIM},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "",
                "volumeName": pv,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    poll(
        "the claim to be bound",
        lambda: (
            core.read_namespaced_persistent_volume_claim(CLAIM, namespace).status.phase == "Bound"
        ),
    )
    return pv


@contextlib.contextmanager
def volume_namespace(api: Any, volume: Path) -> Iterator[str]:
    """A fresh restricted namespace with the claim on `volume`; all of it deleted after."""
    core = client.CoreV1Api(api)
    name = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    try:
        poll(
            f"the default ServiceAccount in {name}",
            lambda: core.list_namespaced_service_account(name).items,
        )
        pv = claim_volume(api, name, volume)
        try:
            yield name
        finally:
            core.delete_persistent_volume(pv)
    finally:
        core.delete_namespace(name)


@contextlib.contextmanager
def real_node_operator(
    cluster: KubeCluster, node: RealNode, volume: Path, namespace: str, **overrides: str
) -> Iterator[OperatorHandle]:
    """The operator for `namespace`, its runner pods on the real node with the built images."""
    with run_operator(
        cluster,
        volume,
        volume_host_path="",
        volume_claim=CLAIM,
        namespaces=namespace,
        runner_image=node.images["runner"],
        fallback_image=node.images["operator"],
        runner_node_selector=json.dumps(REAL_NODE_POD["nodeSelector"]),
        runner_tolerations=json.dumps(REAL_NODE_POD["tolerations"]),
        **overrides,
    ) as handle:
        yield handle
