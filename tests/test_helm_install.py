"""The Helm chart installed as users install it: the operator and the API run as restricted
pods that reach the API server through the `kubernetes` Service, examples/*.yaml go through
`kubectl apply`, the API answers through its Service, `helm test` passes, `helm upgrade`
changes a setting and keeps the jobs, and `helm uninstall` leaves nothing of the release
behind but the (kept) CRD.

Here the chart goes onto this machine's real node with the images of `make images`. With
SMARTTHUMB_E2E_KUBECONFIG set, it goes onto that cluster instead (kind in
.github/workflows/e2e-kind.yaml), described by:

- SMARTTHUMB_E2E_IMAGES: "runner=IMAGE,operator=IMAGE", already on its nodes (`kind load`);
- SMARTTHUMB_E2E_VOLUME: a folder here that is the same path on its nodes (kind's
  extraMounts): the shared volume, a hostPath PersistentVolume;
- SMARTTHUMB_E2E_HOST: this machine's address as pods see it (the test servers listen there);
- SMARTTHUMB_E2E_API_URL: where the API's node port (E2E_NODE_PORT) answers from here.
- SMARTTHUMB_E2E_VALUES (optional): a values file for the install on top of the tests' own
  (say, the nodeSelector its pods need).

The tests of this module share one release and run in order; the last one uninstalls it."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from apiserver import assert_error, b64, encode, file_server, wait_done
from conftest import poll
from images import photo, sample_volume
from kubernetes import config
from kubestack import CLAIM, example, volume_namespace
from operatorharness import Cluster
from PIL import Image
from realnode import REAL_NODE_POD, RealNode
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
E2E_NODE_PORT = 30080


@dataclass
class Target:
    """The cluster the chart goes onto, and how this machine and its pods reach each other."""

    kubeconfig: Path
    tools: Path | None
    """Where kubectl and helm are; None: on PATH."""
    images: dict[str, str]
    host: str
    """This machine's address for pods (URL sources, webhooks)."""
    volume_root: Path
    node: RealNode | None = None
    """This machine's real node; None: an external cluster."""
    api_url: str | None = None
    """The API's node port from here; None: its Service's cluster IP (kube-proxy here)."""
    placement: dict[str, Any] = field(default_factory=dict)
    """nodeSelector and tolerations of every pod."""
    more_values: list[str] = field(default_factory=list)
    """Values files for the install, after the tests' own."""

    def run(
        self, tool: str, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess:
        binary = str(self.tools / tool) if self.tools else tool
        return subprocess.run(
            [binary, *args],
            input=input,
            capture_output=True,
            text=True,
            check=check,
            timeout=600,
            env={**os.environ, "KUBECONFIG": str(self.kubeconfig)},
        )

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess:
        return self.run("kubectl", *args, input=input, check=check)

    def api_client(self) -> Any:
        return config.new_client_from_config(str(self.kubeconfig))


def _external_target() -> Target | None:
    kubeconfig = os.environ.get("SMARTTHUMB_E2E_KUBECONFIG")
    if not kubeconfig:
        return None
    images = dict(item.split("=", 1) for item in os.environ["SMARTTHUMB_E2E_IMAGES"].split(","))
    return Target(
        Path(kubeconfig),
        None,
        images,
        os.environ["SMARTTHUMB_E2E_HOST"],
        Path(os.environ["SMARTTHUMB_E2E_VOLUME"]),
        api_url=os.environ.get("SMARTTHUMB_E2E_API_URL", f"http://127.0.0.1:{E2E_NODE_PORT}"),
        more_values=[v for v in [os.environ.get("SMARTTHUMB_E2E_VALUES")] if v],
    )


@pytest.fixture(scope="module")
def target(request: pytest.FixtureRequest) -> Target:
    external = _external_target()
    if external is not None:
        return external
    cluster = request.getfixturevalue("kube_cluster")
    node: RealNode = request.getfixturevalue("real_node_services")
    return Target(
        cluster.kubeconfig,
        cluster.bin_dir,
        node.images,
        node.gateway,
        Path("/tmp"),
        node=node,
        placement={
            "nodeSelector": REAL_NODE_POD["nodeSelector"],
            "tolerations": REAL_NODE_POD["tolerations"],
        },
    )


@dataclass
class Release:
    target: Target
    namespace: str
    volume: Path
    jobs: Cluster
    receiver: Receiver
    photos_url: str
    notes: str = ""

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.target.run("helm", "--namespace", self.namespace, *args, check=check)

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.target.kubectl("--namespace", self.namespace, *args, check=check)

    def apply(self, documents: list[dict[str, Any]]) -> None:
        self.target.kubectl(
            "apply", "-n", self.namespace, "-f", "-", input=yaml.safe_dump_all(documents)
        )

    def api_url(self) -> str:
        if self.target.api_url:
            return self.target.api_url
        service = self.jobs.core.read_namespaced_service(f"{FULLNAME}-api", self.namespace)
        return f"http://{service.spec.cluster_ip}:{service.spec.ports[0].port}"

    def api(self) -> httpx.Client:
        """A client of the API's Service with the token the chart generated (read back from
        its Secret, as the chart's NOTES tell users to)."""
        secret = self.jobs.core.read_namespaced_secret(f"{FULLNAME}-api-tokens", self.namespace)
        token = base64.b64decode(secret.data["tokens"]).decode()
        headers = {"authorization": f"Bearer {token}"}
        return httpx.Client(base_url=self.api_url(), timeout=30, headers=headers)

    def pods(self, component: str) -> list[Any]:
        return self.jobs.core.list_namespaced_pod(
            self.namespace, label_selector=f"{INSTANCE},app.kubernetes.io/component={component}"
        ).items


def values(target: Target) -> dict[str, Any]:
    """The release's values: the images built for the test, the volume pre-bound by the test,
    the test servers let through, every pod where the target wants it."""

    def image(role: str) -> dict[str, str]:
        repository, tag = target.images[role].rsplit(":", 1)
        return {"repository": repository, "tag": tag}

    here = [f"{target.host}/32"]
    service = {"service": {"type": "NodePort", "nodePort": E2E_NODE_PORT}} if target.api_url else {}
    return {
        "image": image("operator"),
        "storage": {"volume": {"existingClaim": CLAIM}},
        "sources": {"allowPrivate": here},
        "webhooks": {"allowPrivate": here, "backoffSeconds": 1},
        "operator": {**target.placement, "sweepIntervalSeconds": 1},
        "api": {**target.placement, **service},
        "runner": {"image": image("runner"), **target.placement},
        "tests": target.placement,
    }


def _adopt_crd(target: Target, namespace: str) -> None:
    """A CRD applied before (by the other tests, or a user's `kubectl apply`) is adopted by the
    release, as Helm documents: its ownership label and annotations."""
    if target.kubectl("get", f"crd/{crd.NAME}", check=False).returncode != 0:
        return
    target.kubectl("label", "--overwrite", f"crd/{crd.NAME}", "app.kubernetes.io/managed-by=Helm")
    target.kubectl(
        "annotate",
        "--overwrite",
        f"crd/{crd.NAME}",
        f"meta.helm.sh/release-name={RELEASE}",
        f"meta.helm.sh/release-namespace={namespace}",
    )


@pytest.fixture(scope="module")
def release(target: Target) -> Iterator[Release]:
    volume = Path(tempfile.mkdtemp(prefix="st-helm-", dir=target.volume_root))
    receiver = Receiver(host=target.host)
    try:
        with contextlib.ExitStack() as stack:
            api = stack.enter_context(target.api_client())
            namespace = stack.enter_context(volume_namespace(api, volume))
            sample_volume(volume)
            # The operator and API pods (uid 65532) write here.
            if os.geteuid() == 0:
                os.chown(volume, RUNNER_UID, RUNNER_UID)
            else:
                volume.chmod(0o777)
            rocket = (volume / "photos" / "rocket-640x427.jpg").read_bytes()
            photos_url = stack.enter_context(file_server(target.host, {"rocket.jpg": rocket}))
            release = Release(
                target, namespace, volume, Cluster(api, namespace), receiver, photos_url
            )
            values_file = volume.parent / f"{volume.name}-values.yaml"
            values_file.write_text(yaml.safe_dump(values(target)))
            stack.callback(values_file.unlink, missing_ok=True)
            _adopt_crd(target, namespace)
            # Uninstalled here too when a test failed before the uninstall test.
            stack.callback(lambda: release.helm("uninstall", RELEASE, "--wait", check=False))
            more = [arg for path in target.more_values for arg in ("-f", path)]
            installed = release.helm(
                "install",
                RELEASE,
                str(CHART),
                "-f",
                str(values_file),
                *more,
                "--wait",
                "--timeout",
                "5m",
                check=False,
            )
            assert installed.returncode == 0, installed.stderr + _diagnose(release)
            release.notes = installed.stdout
            yield release
    finally:
        receiver.close()
        shutil.rmtree(volume, ignore_errors=True)


def _diagnose(release: Release) -> str:
    """The pods and their last log lines, for a failed assertion's message (this machine's
    node has no address the API server can reach it at for `kubectl logs`: its files)."""
    pods = release.kubectl("get", "pods", "-o", "wide", check=False).stdout
    node = release.target.node
    if node is not None:
        return f"\n{pods}\n{node.pod_logs(release.namespace)}"
    logs = release.kubectl(
        "logs", "-l", INSTANCE, "--tail=30", "--all-containers", "--prefix", check=False
    )
    return f"\n{pods}\n{logs.stdout}{logs.stderr}"


def test_the_release_runs_restricted_pods_on_the_node(release: Release) -> None:
    node = release.target.node
    for component in ("operator", "api"):
        [pod] = release.pods(component)
        if node is not None:
            assert pod.spec.node_name == node.name
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

    expected = {
        "astronaut": ("JPEG", (300, 300)),
        "chapter-1": ("JPEG", (800, 450)),
        "coffee-preview": ("WEBP", (400, 267)),
        "from-url": ("JPEG", (320, 214)),
        "rocket": ("JPEG", (400, 225)),
    }
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
    anonymous = httpx.post(f"{release.api_url()}/thumbnail", json={}, timeout=30)
    assert anonymous.status_code == 401, "the chart's API needs its generated token"
    with release.api() as api:
        submitted = api.post(
            "/thumbnail",
            json={
                "mode": "crop",
                "width": 160,
                "height": 90,
                "image_files": [
                    {"filename": "chelsea.jpg", "content_base64": b64(encode(photo("chelsea")))}
                ],
            },
        )
        assert submitted.status_code in (200, 202), submitted.text
        job_id = submitted.json()["job_id"]
        assert wait_done(api, job_id, timeout=180)["status"] == "done"
        image = api.get(f"/job/{job_id}/image")
        assert image.status_code == 200
        assert image.headers["content-type"] == "image/jpeg"
    assert release.jobs.status(job_id)["phase"] == "Succeeded"  # a ThumbnailJob of the release
    # A ThumbnailJob applied with kubectl is a job of the API too (the README's walkthrough).
    with release.api() as api:
        applied = api.get("/job/astronaut/image")
        assert applied.status_code == 200, applied.text
    with Image.open(io.BytesIO(applied.content)) as thumbnail:
        assert thumbnail.size == (300, 300)


def test_helm_test_submits_a_thumbnail_and_gets_it_back(release: Release) -> None:
    # No --logs: the hook's pod is deleted once it succeeded (nothing of it outlives the
    # release); it exits 0 only when the thumbnail came back at the asked size.
    tested = release.helm("test", RELEASE, "--timeout", "5m", check=False)
    assert tested.returncode == 0, tested.stdout + tested.stderr + _diagnose(release)
    assert re.search(
        r"TEST SUITE:\s+st-smartthumb-test\n.*\n.*\nPhase:\s+Succeeded", tested.stdout
    ), tested.stdout


def test_helm_upgrade_changes_a_setting_and_keeps_the_jobs(release: Release) -> None:
    upgraded = release.helm(
        "upgrade",
        RELEASE,
        str(CHART),
        "--reuse-values",
        "--set",
        "api.maxImages=1",
        "--wait",
        "--timeout",
        "5m",
        check=False,
    )
    assert upgraded.returncode == 0, upgraded.stderr + _diagnose(release)
    [history] = [json.loads(release.helm("history", RELEASE, "-o", "json").stdout)[-1]]
    assert (history["revision"], history["status"]) == (2, "deployed")
    [api_pod] = poll(
        "the old API pod to go", lambda: len(pods := release.pods("api")) == 1 and pods, timeout=60
    )
    env = {var.name: var.value for var in api_pod.spec.containers[0].env}
    assert env["SMARTTHUMB_MAX_IMAGES"] == "1"
    assert release.jobs.status("astronaut")["phase"] == "Succeeded"  # nothing lost
    image = b64(encode(photo("coffee")))
    files = [{"filename": f"{n}.jpg", "content_base64": image} for n in ("a", "b")]
    with release.api() as api:

        def new_pod_answers() -> httpx.Response | None:
            try:
                answer = api.post(
                    "/thumbnail", json={"mode": "pair", "image_files": files}, timeout=5
                )
            except httpx.TransportError:  # the Service still routes to the old pod, now gone
                return None
            return answer if answer.status_code != 202 else None

        refused = poll("the new API pod behind the Service", new_pod_answers, timeout=120)
    assert_error(refused, 400, "too_many_images")


def test_helm_uninstall_leaves_only_the_kept_crd(release: Release) -> None:
    # What the tests applied goes first (a kept CRD keeps its ThumbnailJobs, as data).
    release.kubectl("delete", "thumbnailjobs", "--all", "--wait=true", "--timeout=120s")
    release.kubectl("delete", "secret/thumbnail-webhook")
    removed = release.helm("uninstall", RELEASE, "--wait", "--timeout", "3m", check=False)
    assert removed.returncode == 0, removed.stderr
    assert "kept due to the resource policy" in removed.stdout + removed.stderr

    def leftovers() -> list[str]:
        kinds = release.kubectl(
            "api-resources", "--namespaced", "--verbs=list", "-o", "name"
        ).stdout.split()
        kinds = [kind for kind in kinds if not kind.startswith("events")]
        names = release.kubectl(
            "get", ",".join(kinds), "-o", "name", "--ignore-not-found"
        ).stdout.split()
        allowed = {
            "serviceaccount/default",
            "configmap/kube-root-ca.crt",
            f"persistentvolumeclaim/{CLAIM}",
        }
        return sorted(set(names) - allowed)

    deadline = time.monotonic() + 120  # the garbage collector deletes dependents
    while (left := leftovers()) and time.monotonic() < deadline:
        time.sleep(1)
    assert not left
    node = release.target.node
    if node is not None:  # and on this machine's node, no container of theirs
        poll("its containers to go", lambda: not node.containers(release.namespace), timeout=120)
    # Cluster-scoped objects Helm made for this release (its annotation names the namespace).
    found = json.loads(
        release.target.kubectl(
            "get", "clusterroles,clusterrolebindings,crd", "-l", INSTANCE, "-o", "json"
        ).stdout
    )
    scoped = [
        f"{item['kind']}/{item['metadata']['name']}"
        for item in found["items"]
        if item["metadata"].get("annotations", {}).get("meta.helm.sh/release-namespace")
        == release.namespace
    ]
    assert scoped == [f"CustomResourceDefinition/{crd.NAME}"]
