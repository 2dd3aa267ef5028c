"""The test control plane is real: a real API server, real controllers, kwok as the kubelet.

Each test asserts behaviour that only a real control plane has: server-side validation of a
CRD (OpenAPI schema and CEL), the Job controller driving Jobs to Complete/Failed from pod
status, podFailurePolicy, the TTL-after-finished controller and the garbage collector.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from conftest import poll
from kubecluster import (
    SIMULATE_LABEL,
    SIMULATE_MEMORY_NEED_ANNOTATION,
    SIMULATE_MESSAGE_ANNOTATION,
    KubeCluster,
)
from kubernetes import client
from kubernetes.client.rest import ApiException

pytestmark = pytest.mark.cluster

K8S_MINOR_AT_LEAST = (1, 31)  # podFailurePolicy is GA from 1.31


def job_manifest(
    name: str,
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    memory: str = "256Mi",
    **spec: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": labels or {}, "annotations": annotations or {}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "runner",
                            "image": "smartthumb-runner:test",
                            "resources": {"limits": {"memory": memory}},
                        }
                    ],
                },
            },
            **spec,
        },
    }


def job_condition(batch: client.BatchV1Api, name: str, namespace: str, *types: str) -> Any:
    job = batch.read_namespaced_job(name, namespace)
    for cond in job.status.conditions or []:
        if cond.type in types and cond.status == "True":
            return cond
    return None


def job_pods(core: client.CoreV1Api, job: str, namespace: str) -> list[Any]:
    return core.list_namespaced_pod(namespace, label_selector=f"job-name={job}").items


def test_server_version_is_the_pinned_release(kube_cluster: KubeCluster) -> None:
    out = kube_cluster.kubectl("version", "-o", "json")
    versions = json.loads(out.stdout)
    server = versions["serverVersion"]
    assert server["gitVersion"].startswith("v1."), server  # not v0.0.0-master: ldflags worked
    assert (int(server["major"]), int(server["minor"].rstrip("+"))) >= K8S_MINOR_AT_LEAST
    assert versions["clientVersion"]["gitVersion"] == server["gitVersion"]


def test_crd_server_side_validation_rejects_bad_objects(
    api: client.ApiClient, namespace: str
) -> None:
    ext = client.ApiextensionsV1Api(api)
    custom = client.CustomObjectsApi(api)
    group, plural = f"g{uuid.uuid4().hex[:6]}.test.smartthumb.io", "widgets"
    crd: dict[str, Any] = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": plural, "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "required": ["width"],
                                    "properties": {
                                        "width": {"type": "integer", "minimum": 1, "maximum": 4096},
                                        "minWidth": {"type": "integer"},
                                        "format": {
                                            "type": "string",
                                            "enum": ["png", "jpeg", "webp"],
                                        },
                                    },
                                    "x-kubernetes-validations": [
                                        {
                                            "rule": "!has(self.minWidth) || self.minWidth <= self.width",
                                            "message": "minWidth must not exceed width",
                                        }
                                    ],
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    ext.create_custom_resource_definition(crd)
    try:

        def established() -> bool:
            got = ext.read_custom_resource_definition(crd["metadata"]["name"])
            return any(
                c.type == "Established" and c.status == "True"
                for c in (got.status.conditions or [])
            )

        poll("the CRD to be Established", established)

        def create(name: str, spec: dict[str, Any]) -> Any:
            body = {
                "apiVersion": f"{group}/v1",
                "kind": "Widget",
                "metadata": {"name": name},
                "spec": spec,
            }
            return custom.create_namespaced_custom_object(group, "v1", namespace, plural, body)

        # The discovery of a brand-new CRD can lag a moment behind Established.
        good = poll(
            "a valid Widget to be accepted",
            lambda: _try(lambda: create("good", {"width": 320, "format": "webp"})),
            timeout=15,
        )
        assert good["spec"]["width"] == 320

        with pytest.raises(ApiException) as schema_error:
            create("too-wide", {"width": 100000, "format": "gif"})
        assert schema_error.value.status == 422
        body = json.loads(schema_error.value.body)
        assert "spec.width" in body["message"] and "spec.format" in body["message"], body["message"]

        with pytest.raises(ApiException) as cel_error:
            create("inverted", {"width": 100, "minWidth": 200})
        assert cel_error.value.status == 422
        assert "minWidth must not exceed width" in json.loads(cel_error.value.body)["message"]

        with pytest.raises(ApiException) as missing:
            create("no-width", {"format": "png"})
        assert missing.value.status == 422
        assert "spec.width" in json.loads(missing.value.body)["message"]
    finally:
        ext.delete_custom_resource_definition(crd["metadata"]["name"])


def _try(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def test_job_completes(api: client.ApiClient, namespace: str) -> None:
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    batch.create_namespaced_job(namespace, job_manifest("ok"))

    cond = poll(
        "Job ok to Complete",
        lambda: job_condition(batch, "ok", namespace, "Complete", "Failed"),
        60,
    )
    assert cond.type == "Complete"
    job = batch.read_namespaced_job("ok", namespace)
    assert job.status.succeeded == 1

    (pod,) = job_pods(core, "ok", namespace)
    assert pod.spec.node_name == "kwok-node-0"  # placed by the real scheduler
    assert pod.status.phase == "Succeeded"
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.reason, terminated.exit_code) == ("Completed", 0)


def test_oom_marked_job_fails_with_oomkilled_pod(api: client.ApiClient, namespace: str) -> None:
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    manifest = job_manifest(
        "oom",
        labels={SIMULATE_LABEL: "oom"},
        # Without the rule the Job would retry up to backoffLimit; with it, exit code 137
        # fails the Job at once (podFailurePolicy, GA in 1.31).
        backoffLimit=3,
        podFailurePolicy={
            "rules": [
                {
                    "action": "FailJob",
                    "onExitCodes": {"containerName": "runner", "operator": "In", "values": [137]},
                }
            ]
        },
    )
    batch.create_namespaced_job(namespace, manifest)

    cond = poll(
        "Job oom to fail", lambda: job_condition(batch, "oom", namespace, "Complete", "Failed"), 60
    )
    assert cond.type == "Failed"
    assert cond.reason == "PodFailurePolicy", cond

    (pod,) = job_pods(core, "oom", namespace)
    assert pod.status.phase == "Failed"
    terminated = pod.status.container_statuses[0].state.terminated
    assert terminated.reason == "OOMKilled"
    assert terminated.exit_code == 137


def test_failed_job_without_policy_is_backoff_limit_exceeded(
    api: client.ApiClient, namespace: str
) -> None:
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    batch.create_namespaced_job(namespace, job_manifest("err", labels={SIMULATE_LABEL: "error"}))

    cond = poll(
        "Job err to fail", lambda: job_condition(batch, "err", namespace, "Complete", "Failed"), 60
    )
    assert (cond.type, cond.reason) == ("Failed", "BackoffLimitExceeded")
    (pod,) = job_pods(core, "err", namespace)
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.reason, terminated.exit_code) == ("Error", 1)


def test_sigkill_without_oom_reason_and_termination_message(
    api: client.ApiClient, namespace: str
) -> None:
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    manifest = job_manifest(
        "killed",
        labels={SIMULATE_LABEL: "sigkill"},
        annotations={SIMULATE_MESSAGE_ANNOTATION: '{"stage": "decode"}'},
    )
    batch.create_namespaced_job(namespace, manifest)

    cond = poll(
        "Job killed to fail",
        lambda: job_condition(batch, "killed", namespace, "Complete", "Failed"),
        60,
    )
    assert cond.type == "Failed"
    (pod,) = job_pods(core, "killed", namespace)
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.reason, terminated.exit_code) == ("Error", 137)
    assert json.loads(terminated.message) == {"stage": "decode"}


def test_memory_limit_below_simulated_need_is_oomkilled(
    api: client.ApiClient, namespace: str
) -> None:
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    need = {SIMULATE_MEMORY_NEED_ANNOTATION: "512Mi"}
    batch.create_namespaced_job(namespace, job_manifest("small", annotations=need, memory="128Mi"))
    batch.create_namespaced_job(namespace, job_manifest("large", annotations=need, memory="1Gi"))

    small = poll(
        "Job small to end",
        lambda: job_condition(batch, "small", namespace, "Complete", "Failed"),
        60,
    )
    large = poll(
        "Job large to end",
        lambda: job_condition(batch, "large", namespace, "Complete", "Failed"),
        60,
    )
    assert (small.type, large.type) == ("Failed", "Complete")
    (pod,) = job_pods(core, "small", namespace)
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.reason, terminated.exit_code) == ("OOMKilled", 137)


def test_ttl_after_finished_deletes_the_job(api: client.ApiClient, namespace: str) -> None:
    batch = client.BatchV1Api(api)
    batch.create_namespaced_job(namespace, job_manifest("ttl", ttlSecondsAfterFinished=1))

    def gone() -> bool:
        try:
            batch.read_namespaced_job("ttl", namespace)
            return False
        except ApiException as exc:
            return exc.status == 404

    poll("the finished Job to be deleted by its TTL", gone, 60)


def test_owner_reference_garbage_collection(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    parent = core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "parent"}, "data": {"a": "1"}}
    )
    owner = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": parent.metadata.name,
        "uid": parent.metadata.uid,
        "blockOwnerDeletion": True,
    }
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "child", "ownerReferences": [owner]}}
    )
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "unrelated"}})

    core.delete_namespaced_config_map("parent", namespace, propagation_policy="Background")

    def child_gone() -> bool:
        try:
            core.read_namespaced_config_map("child", namespace)
            return False
        except ApiException as exc:
            return exc.status == 404

    poll("the garbage collector to delete the child", child_gone, 60)
    assert core.read_namespaced_config_map("unrelated", namespace).metadata.name == "unrelated"


def test_helm_runs(kube_cluster: KubeCluster) -> None:
    if not kube_cluster.helm.exists():
        pytest.skip(f"helm is not built in {kube_cluster.bin_dir}")
    out = subprocess.run(
        [str(kube_cluster.helm), "version", "--short"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("v3."), out.stdout
