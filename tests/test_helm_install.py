"""The Helm chart installed as users install it, onto the real node with the images of
`make images`: the operator and the API run as restricted pods that reach the API server
through the `kubernetes` Service, examples/*.yaml go through `kubectl apply`, the API answers
through its Service, `helm test` passes, `helm upgrade` changes a setting and keeps the jobs,
and `helm uninstall` leaves nothing of the release behind but the (kept) CRD.

The tests of this module share one release and run in order; the last one uninstalls it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from apiserver import assert_error, b64, encode, file_server, wait_done
from conftest import poll
from images import photo, sample_volume
from kubecluster import KubeCluster
from kubernetes import client
from kubestack import CLAIM, example, volume_namespace
from operatorharness import Cluster
from PIL import Image
from realnode import NODE_NAME, REAL_NODE_POD, RealNode
from smartthumb.operator.kube import crd
from standardwebhooks import Webhook
from test_engine_support import Receiver

pytestmark = [pytest.mark.cluster, pytest.mark.node]

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "smartthumb"
RELEASE = "st"
FULLNAME = f"{RELEASE}-smartthumb"
INSTANCE = f"app.kubernetes.io/instance={RELEASE}"
RUNNER_UID = 65532


@dataclass
class Release:
    cluster: KubeCluster
    node: RealNode
    namespace: str
    volume: Path
    jobs: Cluster
    receiver: Receiver
    photos_url: str
    notes: str

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.cluster.bin_dir / "helm"), "--namespace", self.namespace, *args],
            env={**os.environ, "KUBECONFIG": str(self.cluster.kubeconfig)},
            capture_output=True, text=True, check=check, timeout=600,
        )

    def apply(self, documents: list[dict[str, Any]]) -> None:
        self.cluster.kubectl("apply", "-n", self.namespace, "-f", "-",
                             input=yaml.safe_dump_all(documents))

    def api_url(self) -> str:
        """The API Service's cluster IP (kube-proxy's rules make it reachable from here)."""
        with self.cluster.api_client() as api:
            service = client.CoreV1Api(api).read_namespaced_service(f"{FULLNAME}-api",
                                                                    self.namespace)
        return f"http://{service.spec.cluster_ip}:{service.spec.ports[0].port}"

    def pods(self, component: str) -> list[Any]:
        with self.cluster.api_client() as api:
            return client.CoreV1Api(api).list_namespaced_pod(
                self.namespace, label_selector=f"{INSTANCE},app.kubernetes.io/component={component}"
            ).items


def values(node: RealNode) -> dict[str, Any]:
    """The release's values: the images built here, every pod on the real node, the volume
    pre-bound by the test, and the test servers on the node's gateway let through."""
    def image(role: str) -> dict[str, str]:
        repository, tag = node.images[role].rsplit(":", 1)
        return {"repository": repository, "tag": tag}

    placement = {"nodeSelector": REAL_NODE_POD["nodeSelector"],
                 "tolerations": REAL_NODE_POD["tolerations"]}
    gateway = [f"{node.gateway}/32"]
    return {
        "image": image("operator"),
        "storage": {"volume": {"existingClaim": CLAIM}},
        "sources": {"allowPrivate": gateway},
        "webhooks": {"allowPrivate": gateway, "backoffSeconds": 1},
        "operator": {**placement, "sweepIntervalSeconds": 1},
        "api": placement,
        "runner": {"image": image("runner"), **placement},
        "tests": placement,
    }


def _adopt_crd(cluster: KubeCluster, namespace: str) -> None:
    """A CRD applied before (by the other tests, or a user's `kubectl apply`) is adopted by the
    release, as Helm documents: its ownership label and annotations."""
    if cluster.kubectl("get", f"crd/{crd.NAME}", check=False).returncode != 0:
        return
    cluster.kubectl("label", "--overwrite", f"crd/{crd.NAME}", "app.kubernetes.io/managed-by=Helm")
    cluster.kubectl("annotate", "--overwrite", f"crd/{crd.NAME}",
                    f"meta.helm.sh/release-name={RELEASE}",
                    f"meta.helm.sh/release-namespace={namespace}")


@pytest.fixture(scope="module")
def release(kube_cluster: KubeCluster, real_node_services: RealNode) -> Iterator[Release]:
    node = real_node_services
    volume = Path(tempfile.mkdtemp(prefix="st-helm-", dir="/tmp"))
    receiver = Receiver(host=node.gateway)
    try:
        with contextlib.ExitStack() as stack:
            api = stack.enter_context(kube_cluster.api_client())
            namespace = stack.enter_context(volume_namespace(api, volume))
            sample_volume(volume)
            os.chown(volume, RUNNER_UID, RUNNER_UID)  # the operator and API pods write here
            rocket = (volume / "photos" / "rocket-640x427.jpg").read_bytes()
            photos_url = stack.enter_context(file_server(node.gateway, {"rocket.jpg": rocket}))
            release = Release(kube_cluster, node, namespace, volume, Cluster(api, namespace),
                              receiver, photos_url, notes="")
            values_file = volume.parent / f"{volume.name}-values.yaml"
            values_file.write_text(yaml.safe_dump(values(node)))
            stack.callback(values_file.unlink, missing_ok=True)
            _adopt_crd(kube_cluster, namespace)
            # Uninstalled here too when a test failed before the uninstall test.
            stack.callback(lambda: release.helm("uninstall", RELEASE, "--wait", check=False))
            installed = release.helm("install", RELEASE, str(CHART), "-f", str(values_file),
                                     "--wait", "--timeout", "5m", check=False)
            assert installed.returncode == 0, installed.stderr + _diagnose(release)
            release.notes = installed.stdout
            yield release
    finally:
        receiver.close()
        shutil.rmtree(volume, ignore_errors=True)


def _diagnose(release: Release) -> str:
    """The pods and their last log lines, for a failed assertion's message."""
    pods = release.cluster.kubectl("get", "pods", "-n", release.namespace, "-o", "wide",
                                   check=False).stdout
    return f"\n{pods}\n{release.node.pod_logs(release.namespace)}"


def test_the_release_runs_restricted_pods_on_the_node(release: Release) -> None:
    for component in ("operator", "api"):
        [pod] = release.pods(component)
        assert pod.spec.node_name == NODE_NAME
        assert pod.status.phase == "Running"
        assert all(status.ready for status in pod.status.container_statuses)
        assert pod.spec.security_context.run_as_non_root is True
    assert f"kubectl -n {release.namespace}" in release.notes, release.notes


def test_the_examples_run_through_kubectl_apply(release: Release) -> None:
    receiver = release.receiver
    url = example("url")
    url[0]["spec"]["sources"] = [{"url": f"{release.photos_url}/rocket.jpg?signature=abc123"}]
    webhook = example("webhook")
    webhook[1]["spec"]["webhook"]["url"] = receiver.url
    for documents in (example("crop"), example("pair"), example("fit"), url, webhook):
        release.apply(documents)

    expected = {"astronaut": ("JPEG", (300, 300)), "chapter-1": ("JPEG", (800, 450)),
                "coffee-preview": ("WEBP", (400, 267)), "from-url": ("JPEG", (320, 214)),
                "rocket": ("JPEG", (400, 225))}
    for name, (fmt, size) in expected.items():
        status = release.jobs.finished(name, timeout=180)
        assert status["phase"] == "Succeeded", (name, status, _diagnose(release))
        with Image.open(release.volume / status["result"]["output"]) as thumbnail:
            assert (thumbnail.format, thumbnail.size) == (fmt, size), name
    assert release.jobs.status("coffee-preview")["result"]["output"] == "previews/coffee.webp"
    assert "abc123" not in json.dumps(release.jobs.status("from-url"))

    [delivery] = receiver.wait_for(1, timeout=60)
    key = webhook[0]["stringData"]["signing-key"]
    event = Webhook(key).verify(delivery["body"], delivery["headers"])
    assert (event["job_id"], event["status"]) == ("rocket", "done"), event
    assert event["result"]["output"]["width"] == 400, event


def test_the_api_makes_a_thumbnail_through_its_service(release: Release) -> None:
    with httpx.Client(base_url=release.api_url(), timeout=30) as api:
        submitted = api.post("/thumbnail", json={
            "mode": "crop", "width": 160, "height": 90,
            "image_files": [{"filename": "chelsea.jpg", "content_base64": b64(encode(
                photo("chelsea")))}],
        })
        assert submitted.status_code in (200, 202), submitted.text
        job_id = submitted.json()["job_id"]
        assert wait_done(api, job_id, timeout=180)["status"] == "done"
        image = api.get(f"/job/{job_id}/image")
        assert image.status_code == 200
        assert image.headers["content-type"] == "image/jpeg"
    assert release.jobs.status(job_id)["phase"] == "Succeeded"  # a ThumbnailJob of the release


def test_helm_test_submits_a_thumbnail_and_gets_it_back(release: Release) -> None:
    # No --logs: the hook's pod is deleted once it succeeded (nothing of it outlives the
    # release); it exits 0 only when the thumbnail came back at the asked size.
    tested = release.helm("test", RELEASE, "--timeout", "5m", check=False)
    assert tested.returncode == 0, tested.stdout + tested.stderr + _diagnose(release)
    assert re.search(r"TEST SUITE:\s+st-smartthumb-test\n.*\n.*\nPhase:\s+Succeeded",
                     tested.stdout), tested.stdout


def test_helm_upgrade_changes_a_setting_and_keeps_the_jobs(release: Release) -> None:
    upgraded = release.helm("upgrade", RELEASE, str(CHART), "--reuse-values",
                            "--set", "api.maxImages=1", "--wait", "--timeout", "5m", check=False)
    assert upgraded.returncode == 0, upgraded.stderr + _diagnose(release)
    [history] = [json.loads(release.helm("history", RELEASE, "-o", "json").stdout)[-1]]
    assert (history["revision"], history["status"]) == (2, "deployed")
    [api_pod] = poll("the old API pod to go", lambda: len(pods := release.pods("api")) == 1
                     and pods, timeout=60)
    env = {var.name: var.value for var in api_pod.spec.containers[0].env}
    assert env["SMARTTHUMB_MAX_IMAGES"] == "1"
    assert release.jobs.status("astronaut")["phase"] == "Succeeded"  # nothing lost
    image = b64(encode(photo("coffee")))
    files = [{"filename": f"{n}.jpg", "content_base64": image} for n in ("a", "b")]
    with httpx.Client(base_url=release.api_url(), timeout=30) as api:
        refused = poll("the new API pod behind the Service", lambda: (
            answer := api.post("/thumbnail", json={"mode": "pair", "image_files": files})
        ).status_code != 202 and answer)
    assert_error(refused, 400, "too_many_images")


def test_helm_uninstall_leaves_only_the_kept_crd(release: Release) -> None:
    # What the tests applied goes first (a kept CRD keeps its ThumbnailJobs, as data).
    release.cluster.kubectl("delete", "thumbnailjobs", "--all", "-n", release.namespace,
                            "--wait=true", "--timeout=120s")
    release.cluster.kubectl("delete", "-n", release.namespace, "secret/thumbnail-webhook")
    removed = release.helm("uninstall", RELEASE, "--wait", "--timeout", "3m", check=False)
    assert removed.returncode == 0, removed.stderr
    assert "kept due to the resource policy" in removed.stdout + removed.stderr

    def leftovers() -> list[str]:
        kinds = release.cluster.kubectl(
            "api-resources", "--namespaced", "--verbs=list", "-o", "name").stdout.split()
        kinds = [kind for kind in kinds if not kind.startswith("events")]
        names = release.cluster.kubectl(
            "get", ",".join(kinds), "-n", release.namespace, "-o", "name",
            "--ignore-not-found").stdout.split()
        allowed = {"serviceaccount/default", "configmap/kube-root-ca.crt",
                   f"persistentvolumeclaim/{CLAIM}"}
        return sorted(set(names) - allowed)

    deadline = time.monotonic() + 120  # the garbage collector deletes dependents
    while (left := leftovers()) and time.monotonic() < deadline:
        time.sleep(1)
    assert not left
    poll("its containers to go", lambda: not release.node.containers(release.namespace),
         timeout=120)
    scoped = release.cluster.kubectl("get", "clusterroles,clusterrolebindings,crd", "-l",
                                     INSTANCE, "-o", "name").stdout.split()
    assert scoped == [f"customresourcedefinition.apiextensions.k8s.io/{crd.NAME}"]
