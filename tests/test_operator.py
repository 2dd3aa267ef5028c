"""The operator on the real control plane (kwok plays the kubelet: pods end as their labels
and annotations say, see tests/kubecluster.py): every path of a ThumbnailJob's life."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import poll
from kubecluster import (
    SIMULATE_EXIT_CODE_ANNOTATION,
    SIMULATE_FALLBACK_MEMORY_NEED_ANNOTATION,
    SIMULATE_LABEL,
    SIMULATE_MEMORY_NEED_ANNOTATION,
    KubeCluster,
)
from kubernetes import client
from operatorharness import Cluster, OperatorHandle, result_json, run_operator, simulated
from operatorharness import thumbnail_job as tj
from smartthumb.operator.kube.resource import GROUP, PLURAL, VERSION
from smartthumb.operator.kube.settings import OperatorSettings
from standardwebhooks import Webhook
from test_engine_support import Receiver

pytestmark = pytest.mark.cluster

SECRET = "whsec_" + base64.b64encode(b"smartthumb-operator-test-key-32b").decode()


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    """The shared volume as the operator sees it (kwok's pods never open the files)."""
    root = tmp_path / "volume"
    (root / "in").mkdir(parents=True)
    (root / "in" / "photo.jpg").write_bytes(b"\xff\xd8 a photo")
    return root


@pytest.fixture
def cluster(api: Any, namespace: str, installed_crd: str) -> Cluster:
    return Cluster(api, namespace)


@pytest.fixture
def operator(kube_cluster: KubeCluster, volume: Path) -> Iterator[OperatorHandle]:
    with run_operator(kube_cluster, volume) as handle:
        yield handle


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.close()


def attempts(status: dict[str, Any]) -> list[tuple[str, str | None, str | None]]:
    return [(a["runner"], a.get("memory"), a.get("outcome")) for a in status["attempts"]]


# --- the paths of a job ---------------------------------------------------------------------


def test_a_job_succeeds_with_status_conditions_columns_and_events(
    kube_cluster: KubeCluster, cluster: Cluster, operator: OperatorHandle
) -> None:
    cluster.create(tj("photo", runnerPod=simulated(result_json(), labels={"team": "covers"})))
    status = cluster.finished("photo")

    assert status["phase"] == "Succeeded"
    assert attempts(status) == [("main", "512Mi", "Succeeded")]
    assert status["attempts"][0]["jobName"] == "photo-1"
    result = status["result"]
    assert result["output"] == f"smartthumb/{cluster.namespace}/photo/thumbnail.jpg"
    assert (result["width"], result["height"], result["method"]) == (300, 300, "crop:face+saliency")
    assert result["fallbackUsed"] is False
    conditions = cluster.conditions("photo")
    assert conditions["Admitted"]["status"] == "True"
    assert conditions["Running"]["status"] == "False"
    assert conditions["Succeeded"]["reason"] == "ThumbnailWritten"
    assert "Failed" not in conditions and "FallbackUsed" not in conditions
    assert all(c["observedGeneration"] == 1 for c in conditions.values())
    assert status["observedGeneration"] == 1 and "queuePosition" not in status
    assert (operator.volume / f"smartthumb/{cluster.namespace}/photo").is_dir()

    table = kube_cluster.kubectl("get", "tj", "-n", cluster.namespace).stdout.split()
    assert table[:5] == ["NAME", "STATUS", "MODE", "ATTEMPTS", "FALLBACK"]
    assert table[6:10] == ["photo", "Succeeded", "crop", "1"]
    described = kube_cluster.kubectl("describe", "tj", "photo", "-n", cluster.namespace).stdout
    for reason in ("Queued", "Started", "Succeeded"):
        assert reason in described
    assert poll("the events", lambda: cluster.event_reasons("photo")) == [
        "Queued",
        "Started",
        "Succeeded",
    ]


def test_runner_pods_get_the_operators_priority_class_unless_their_job_names_one(
    api: Any, kube_cluster: KubeCluster, cluster: Cluster, volume: Path
) -> None:
    scheduling = client.SchedulingV1Api(api)
    classes = [f"st-{cluster.namespace}-{name}" for name in ("default", "own")]
    for name in classes:
        scheduling.create_priority_class({"metadata": {"name": name}, "value": 10})
    try:
        with run_operator(
            kube_cluster, volume, runner_priority_class=classes[0], namespaces=cluster.namespace
        ):
            cluster.create(tj("plain", runnerPod=simulated(result_json())))
            cluster.create(
                tj("own", runnerPod={**simulated(result_json()), "priorityClassName": classes[1]})
            )
            for name in ("plain", "own"):
                assert cluster.finished(name)["phase"] == "Succeeded"
        jobs = {job.metadata.name: job for job in cluster.jobs()}
        assert jobs["plain-1"].spec.template.spec.priority_class_name == classes[0]
        assert jobs["own-1"].spec.template.spec.priority_class_name == classes[1]
    finally:
        for name in classes:
            scheduling.delete_priority_class(name)


def test_the_runner_job_is_memory_limited_restricted_and_owned(
    cluster: Cluster, operator: OperatorHandle
) -> None:
    cluster.create(
        tj(
            "owned",
            timeoutSeconds=120,
            runnerPod={
                "annotations": {"sidecar.istio.io/inject": "false"},
                "labels": {"cost-center": "thumbs"},
                "nodeSelector": {"type": "kwok"},
                "tolerations": [
                    {"key": "pool", "operator": "Equal", "value": "batch", "effect": "NoSchedule"}
                ],
            },
        )
    )
    cluster.finished("owned")
    [job] = cluster.jobs()
    owner = job.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.controller) == ("ThumbnailJob", "owned", True)
    assert job.metadata.name == "owned-1"
    spec = job.spec
    assert (spec.backoff_limit, spec.active_deadline_seconds) == (0, 120)
    assert spec.ttl_seconds_after_finished >= 60
    rules = spec.pod_failure_policy.rules
    assert rules[0].action == "Ignore" and rules[0].on_pod_conditions[0].type == "DisruptionTarget"
    assert rules[1].action == "FailJob" and 137 in rules[1].on_exit_codes.values
    pod = spec.template
    assert pod.metadata.labels["cost-center"] == "thumbs"
    assert pod.metadata.annotations["sidecar.istio.io/inject"] == "false"
    assert pod.spec.restart_policy == "Never" and pod.spec.automount_service_account_token is False
    assert pod.spec.node_selector == {"type": "kwok"}
    assert pod.spec.tolerations[0].key == "pool"
    assert pod.spec.security_context.run_as_non_root is True
    assert pod.spec.security_context.seccomp_profile.type == "RuntimeDefault"
    [container] = pod.spec.containers
    assert container.resources.requests["memory"] == container.resources.limits["memory"] == "512Mi"
    assert "cpu" not in container.resources.limits
    context = container.security_context
    assert context.read_only_root_filesystem and not context.allow_privilege_escalation
    assert context.capabilities.drop == ["ALL"]
    assert container.termination_message_path == "/dev/termination-log"
    args = container.args
    assert args[0] == "crop" and "--termination-log" in args
    assert args[-1] == str(operator.volume.resolve() / "in" / "photo.jpg")
    assert json.loads(args[args.index("--spec") + 1])["width"] == 300


def test_oom_is_retried_with_double_the_memory(cluster: Cluster, operator: OperatorHandle):
    runner_pod = simulated(
        result_json(),
        **{SIMULATE_MEMORY_NEED_ANNOTATION: "600Mi"},  # type: ignore[arg-type]  # not `labels`
    )
    cluster.create(tj("bigger", resources={"maxMemory": "2Gi"}, runnerPod=runner_pod))
    status = cluster.finished("bigger")
    assert status["phase"] == "Succeeded"
    assert attempts(status) == [("main", "512Mi", "OOMKilled"), ("main", "1Gi", "Succeeded")]
    assert "OOMKilled by the kernel at the 512Mi memory limit" in status["attempts"][0]["message"]
    assert status["result"]["fallbackUsed"] is False
    assert "FallbackUsed" not in cluster.conditions("bigger")
    assert poll(
        "the events",
        lambda: "Succeeded" in cluster.event_reasons("bigger") and cluster.event_reasons("bigger"),
    ) == ["Queued", "Started", "OOMKilled", "RetryingWithMoreMemory", "Succeeded"]
    assert [j.metadata.name for j in cluster.jobs()] == ["bigger-1", "bigger-2"]


def test_oom_at_the_maximum_falls_back_to_the_light_runner(
    kube_cluster: KubeCluster, cluster: Cluster, operator: OperatorHandle
) -> None:
    runner_pod = simulated(
        result_json(method="pair:edges"),
        **{SIMULATE_MEMORY_NEED_ANNOTATION: "10Gi"},  # type: ignore[arg-type]  # not `labels`
    )
    cluster.create(tj("light", resources={"maxMemory": "1Gi"}, runnerPod=runner_pod))
    status = cluster.finished("light")
    assert status["phase"] == "Succeeded", status
    assert attempts(status) == [
        ("main", "512Mi", "OOMKilled"),
        ("main", "1Gi", "OOMKilled"),
        ("fallback", "256Mi", "Succeeded"),
    ]
    assert status["result"]["fallbackUsed"] is True
    assert "ran out of memory" in status["result"]["workerWarning"]
    fallback = cluster.conditions("light")["FallbackUsed"]
    assert (fallback["status"], fallback["reason"]) == ("True", "MainRunnerOutOfMemory")
    assert "FallingBack" in poll("events", lambda: cluster.event_reasons("light"))
    fallback_job = next(j for j in cluster.jobs() if j.metadata.name == "light-3")
    assert fallback_job.metadata.labels["smartthumb.dev/runner"] == "fallback"
    assert "--fallback" in fallback_job.spec.template.spec.containers[0].args
    row = kube_cluster.kubectl(
        "get", "tj", "light", "-n", cluster.namespace, "--no-headers"
    ).stdout.split()
    assert row[:5] == ["light", "Succeeded", "crop", "3", "True"]


def test_a_fallback_that_runs_out_of_memory_fails_the_job(
    cluster: Cluster, operator: OperatorHandle
) -> None:
    runner_pod = {"labels": {SIMULATE_LABEL: "oom"}}
    cluster.create(tj("hopeless", resources={"maxMemory": "512Mi"}, runnerPod=runner_pod))
    status = cluster.finished("hopeless")
    assert status["phase"] == "Failed"
    assert attempts(status) == [("main", "512Mi", "OOMKilled"), ("fallback", "256Mi", "OOMKilled")]
    failed = cluster.conditions("hopeless")["Failed"]
    assert failed["reason"] == "OutOfMemory" and "both ran out" in failed["message"]
    assert status["failureReason"] == "OutOfMemory"


def test_a_disrupted_pod_is_rerun_in_place_not_as_a_fallback(
    cluster: Cluster, operator: OperatorHandle
) -> None:
    cluster.create(tj("preempted", runnerPod=simulated(result_json(), duration="4s")))
    first = poll(
        "the first pod running",
        lambda: next((p for p in cluster.pods() if p.status.phase == "Running"), None),
    )
    # What the scheduler's preemption (or a drain) writes to the pod it stops.
    cluster.core.patch_namespaced_pod_status(
        first.metadata.name,
        cluster.namespace,
        {
            "status": {
                "phase": "Failed",
                "conditions": [
                    {
                        "type": "DisruptionTarget",
                        "status": "True",
                        "reason": "PreemptionByScheduler",
                        "message": "preempted by a higher-priority pod",
                    }
                ],
                "containerStatuses": [
                    {
                        "name": "runner",
                        "image": "smartthumb-runner:0.1.0",
                        "imageID": "",
                        "ready": False,
                        "restartCount": 0,
                        "state": {"terminated": {"exitCode": 137, "reason": "Error"}},
                    }
                ],
            }
        },
    )
    status = cluster.finished("preempted")
    assert status["phase"] == "Succeeded", status
    assert attempts(status) == [("main", "512Mi", "Succeeded")]
    assert status["attempts"][0]["disruptedPods"] == [first.metadata.name]
    assert status["interruptions"] == 1 and status["result"]["fallbackUsed"] is False
    assert "PodDisrupted" in cluster.event_reasons("preempted")
    assert len(cluster.pods()) == 2  # the Job replaced the disrupted pod


def test_bad_input_fails_at_once_without_retry_or_fallback(
    cluster: Cluster, operator: OperatorHandle
) -> None:
    message = json.dumps({"error": "photo.jpg: not an image (unknown format)", "exit_code": 2})
    runner_pod = simulated(
        message, labels={SIMULATE_LABEL: "error"}, **{SIMULATE_EXIT_CODE_ANNOTATION: "2"}
    )
    cluster.create(tj("garbage", runnerPod=runner_pod))
    status = cluster.finished("garbage")
    assert status["phase"] == "Failed"
    assert attempts(status) == [("main", "512Mi", "BadInput")]
    failed = cluster.conditions("garbage")["Failed"]
    assert failed["reason"] == "BadInput"
    assert failed["message"] == "photo.jpg: not an image (unknown format)"


def test_a_run_past_its_deadline_fails_with_deadline_exceeded(
    cluster: Cluster, operator: OperatorHandle
) -> None:
    cluster.create(tj("slow", timeoutSeconds=2, runnerPod=simulated(duration="60s")))
    status = cluster.finished("slow")
    assert status["phase"] == "Failed"
    assert attempts(status) == [("main", "512Mi", "DeadlineExceeded")]
    assert cluster.conditions("slow")["Failed"]["reason"] == "DeadlineExceeded"


def test_a_success_without_a_runner_result_is_not_ok(cluster: Cluster, operator: OperatorHandle):
    cluster.create(tj("silent"))  # exit 0, empty termination message (kubernetes#104454)
    status = cluster.finished("silent")
    assert status["phase"] == "Failed"
    assert "no runner result" in status["message"]


@pytest.mark.parametrize(
    ("path", "reason"),
    [("in/missing.jpg", "InputNotFound"), ("escape.jpg", "BadInput"), ("in", "BadInput")],
)
def test_unusable_sources_fail_before_any_job(
    cluster: Cluster, operator: OperatorHandle, path: str, reason: str
) -> None:
    (operator.volume / "escape.jpg").symlink_to("/etc/hostname")
    cluster.create(tj("refused", sources=[{"path": path}]))
    status = cluster.finished("refused")
    assert status["phase"] == "Failed" and status["failureReason"] == reason
    assert cluster.conditions("refused")["Failed"]["reason"] == reason
    assert cluster.conditions("refused")["Admitted"]["status"] == "False"
    assert status.get("attempts", []) == [] and cluster.jobs() == []


def test_a_refused_webhook_address_fails_the_job(
    kube_cluster: KubeCluster, cluster: Cluster, volume: Path
) -> None:
    with run_operator(kube_cluster, volume, allow_private_webhooks="false"):
        cluster.create(tj("ssrf", webhook={"url": "http://169.254.169.254/latest"}))
        status = cluster.finished("ssrf")
    assert status["failureReason"] == "WebhookRefused"
    assert cluster.jobs() == []


# --- admission, TTL, webhooks ---------------------------------------------------------------------


def test_admission_runs_at_most_the_limit_oldest_first(
    kube_cluster: KubeCluster, cluster: Cluster, volume: Path
) -> None:
    names = [f"batch-{index:02d}" for index in range(50)]
    with run_operator(kube_cluster, volume, max_running="5"):
        for name in names:
            cluster.create(tj(name, runnerPod=simulated(result_json(), duration="1s")))
        peak = 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            items = cluster.custom.list_namespaced_custom_object(
                GROUP, VERSION, cluster.namespace, PLURAL
            )["items"]
            phases = [(i.get("status") or {}).get("phase") for i in items]
            active = sum(1 for j in cluster.jobs() if (j.status.active or 0) > 0)
            peak = max(peak, phases.count("Running"), active)
            assert phases.count("Running") <= 5 and active <= 5
            if phases.count("Succeeded") == len(names):
                break
            time.sleep(0.2)
    assert phases.count("Succeeded") == len(names)
    assert peak == 5
    started = {i["metadata"]["name"]: i["status"]["startedAt"] for i in items}
    order = sorted(names, key=lambda name: started[name])
    assert set(order[:5]) == set(names[:5])  # the oldest got the first slots


def test_waiting_jobs_show_their_queue_position(
    kube_cluster: KubeCluster, cluster: Cluster, volume: Path
) -> None:
    with run_operator(kube_cluster, volume, max_running="1"):
        for name in ("first", "second", "third"):
            cluster.create(tj(name, runnerPod=simulated(result_json(), duration="3s")))
        poll("positions", lambda: cluster.status("third").get("queuePosition") == 2)
        assert cluster.status("second")["queuePosition"] == 1
        admitted = cluster.conditions("third")["Admitted"]
        assert (admitted["status"], admitted["reason"]) == ("False", "Queued")
        assert "position 2" in admitted["message"]
        cluster.finished("third", timeout=60)
    assert "queuePosition" not in cluster.status("third")


def test_ttl_deletes_the_job_its_runner_jobs_pods_and_files(
    cluster: Cluster, operator: OperatorHandle
) -> None:
    cluster.create(tj("brief", ttlSecondsAfterFinished=2, runnerPod=simulated(result_json())))
    cluster.finished("brief")
    folder = operator.volume / "smartthumb" / cluster.namespace / "brief"
    assert folder.is_dir()
    poll("the ThumbnailJob to be deleted", lambda: cluster.get("brief") is None, timeout=30)
    poll(
        "its Jobs and pods to be collected",
        lambda: not cluster.jobs() and not cluster.pods(),
        timeout=30,
    )
    assert not folder.exists()


def test_the_webhook_is_signed_with_the_referenced_secret(
    cluster: Cluster, operator: OperatorHandle, receiver: Receiver
) -> None:
    cluster.core.create_namespaced_secret(
        cluster.namespace, {"metadata": {"name": "hook-key"}, "stringData": {"key": SECRET}}
    )
    created = cluster.create(
        tj(
            "hooked",
            runnerPod=simulated(result_json()),
            webhook={"url": receiver.url, "secretRef": {"name": "hook-key", "key": "key"}},
        )
    )
    [request] = receiver.wait_for(1, timeout=60)
    body = Webhook(SECRET).verify(request["body"], request["headers"])
    assert body["job_id"] == "hooked" and body["status"] == "done"
    assert body["result"]["output"]["width"] == 300
    assert request["headers"]["webhook-id"] == f"msg_{created['metadata']['uid']}"
    poll(
        "the delivery in the status",
        lambda: cluster.conditions("hooked").get("WebhookDelivered", {}).get("status") == "True",
    )
    assert cluster.status("hooked")["webhook"]["attempts"] == 1
    assert "WebhookDelivered" in cluster.event_reasons("hooked")
    time.sleep(1.5)  # a few sweeps later: still exactly one POST
    assert len(receiver.requests) == 1


def test_a_failing_webhook_is_retried_then_delivered(
    cluster: Cluster, operator: OperatorHandle, receiver: Receiver
) -> None:
    receiver.statuses = [(503, {"retry-after": "1"}), (500, {})]
    cluster.create(tj("retried", runnerPod=simulated(result_json()), webhook={"url": receiver.url}))
    requests = receiver.wait_for(3, timeout=60)
    assert len({r["headers"]["webhook-id"] for r in requests}) == 1  # one event, retried
    poll("delivered", lambda: cluster.status("retried").get("webhook", {}).get("delivered"))
    assert cluster.status("retried")["webhook"]["attempts"] == 3
    assert cluster.event_reasons("retried").count("WebhookFailed") == 2


# --- restarts, deletion, replicas -------------------------------------------------------------


def test_an_operator_stopped_mid_job_loses_and_repeats_nothing(
    kube_cluster: KubeCluster, cluster: Cluster, volume: Path, receiver: Receiver
) -> None:
    with run_operator(kube_cluster, volume):
        cluster.create(
            tj(
                "restart",
                webhook={"url": receiver.url},
                runnerPod=simulated(result_json(), duration="3s"),
            )
        )
        cluster.wait_phase("restart", "Running")
    # Down while the pod finishes; a new operator process finds the finished Job.
    poll(
        "the runner Job to finish while no operator runs",
        lambda: any(j.status.succeeded for j in cluster.jobs()),
        timeout=30,
    )
    with run_operator(kube_cluster, volume):
        status = cluster.finished("restart")
        receiver.wait_for(1, timeout=60)
        time.sleep(1.5)
    assert status["phase"] == "Succeeded"
    assert [j.metadata.name for j in cluster.jobs()] == ["restart-1"]
    with run_operator(kube_cluster, volume):
        time.sleep(2)  # another restart after the delivery: no second POST
    assert len(receiver.requests) == 1


def test_a_run_whose_job_was_never_created_gets_it_after_a_restart(
    kube_cluster: KubeCluster, cluster: Cluster, volume: Path
) -> None:
    """An operator that wrote 'Running, attempt 1' and died before creating the Job."""
    cluster.create(tj("orphan", runnerPod=simulated(result_json())))
    obj = cluster.get("orphan")
    assert obj is not None
    now = "2026-01-01T00:00:00Z"
    obj["status"] = {
        "phase": "Running",
        "startedAt": now,
        "attempts": [
            {
                "attempt": 1,
                "jobName": "orphan-1",
                "runner": "main",
                "memory": "512Mi",
                "startedAt": now,
            }
        ],
    }
    cluster.custom.replace_namespaced_custom_object_status(
        GROUP, VERSION, cluster.namespace, PLURAL, "orphan", obj
    )
    with run_operator(kube_cluster, volume):
        status = cluster.finished("orphan")
    assert status["phase"] == "Succeeded"
    assert [j.metadata.name for j in cluster.jobs()] == ["orphan-1"]


def test_deleting_a_job_while_the_operator_is_down_completes(
    kube_cluster: KubeCluster, cluster: Cluster, volume: Path
) -> None:
    with run_operator(kube_cluster, volume):
        cluster.create(tj("doomed", runnerPod=simulated(result_json(), duration="30s")))
        cluster.wait_phase("doomed", "Running")
        poll("its runner Job", cluster.jobs)
    doomed = cluster.get("doomed")
    assert doomed is not None and not doomed["metadata"].get("finalizers")
    out = kube_cluster.kubectl(
        "delete", "tj", "doomed", "-n", cluster.namespace, "--timeout=20s", check=False
    )
    assert out.returncode == 0, out.stderr
    poll("the runner Job to be collected", lambda: not cluster.jobs(), timeout=30)


KOPF_PEERING_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "kopfpeerings.kopf.dev"},
    "spec": {
        "group": "kopf.dev",
        "scope": "Namespaced",
        "names": {"kind": "KopfPeering", "plural": "kopfpeerings", "singular": "kopfpeering"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "status": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            }
                        },
                    }
                },
            }
        ],
    },
}


def test_two_replicas_run_each_job_once_and_one_takes_over(
    kube_cluster: KubeCluster, cluster: Cluster, volume: Path, api: Any
) -> None:
    extensions = client.ApiextensionsV1Api(api)
    if not extensions.list_custom_resource_definition(
        field_selector="metadata.name=kopfpeerings.kopf.dev"
    ).items:
        extensions.create_custom_resource_definition(KOPF_PEERING_CRD)
    kube_cluster.kubectl(
        "wait", "--for=condition=Established", "crd/kopfpeerings.kopf.dev", "--timeout=30s"
    )
    poll(
        "KopfPeering to be served",
        lambda: (
            kube_cluster.kubectl(
                "get", "kopfpeerings", "-n", cluster.namespace, check=False
            ).returncode
            == 0
        ),
    )
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        "kopf.dev",
        "v1",
        cluster.namespace,
        "kopfpeerings",
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "smartthumb"}},
    )
    shared = {
        "peering": "smartthumb",
        "lease_name": f"ha-{cluster.namespace}",
        "namespaces": cluster.namespace,
    }
    with run_operator(kube_cluster, volume, priority="50", identity="replica-b", **shared):
        with run_operator(kube_cluster, volume, priority="100", identity="replica-a", **shared):
            for index in range(6):
                cluster.create(tj(f"ha-{index}", runnerPod=simulated(result_json())))
            for index in range(6):
                assert cluster.finished(f"ha-{index}")["phase"] == "Succeeded"
        # Replica A is gone: B takes over the handlers (peering) and admission (the Lease).
        cluster.create(tj("after", runnerPod=simulated(result_json())))
        assert cluster.finished("after", timeout=60)["phase"] == "Succeeded"
    names = sorted(j.metadata.name for j in cluster.jobs())
    assert names == sorted([*(f"ha-{index}-1" for index in range(6)), "after-1"])
    # Each replica handed the Lease back as it stopped: it is there, held by no one.
    lease = client.CoordinationV1Api(api).read_namespaced_lease(
        f"ha-{cluster.namespace}", "default"
    )
    assert lease.spec.holder_identity is None


def test_metrics_and_liveness(cluster: Cluster, operator: OperatorHandle) -> None:
    runner_pod = simulated(
        result_json(),
        **{  # type: ignore[arg-type]  # not `labels`
            SIMULATE_MEMORY_NEED_ANNOTATION: "10Gi",
            SIMULATE_FALLBACK_MEMORY_NEED_ANNOTATION: "1Mi",
        },
    )
    cluster.create(tj("measured", resources={"maxMemory": "512Mi"}, runnerPod=runner_pod))
    cluster.finished("measured")
    poll("a sweep round", lambda: operator.liveness().get("sweep", {}).get("sweep_rounds"))
    status, text = operator.get("/metrics")
    assert status == 200
    for line in (
        'smartthumb_runner_runs_total{outcome="oom"} 1.0',
        'smartthumb_runner_runs_total{outcome="ok"} 1.0',
        'smartthumb_runner_out_of_memory_total{runner="main"} 1.0',
        "smartthumb_fallbacks_total 1.0",
        'smartthumb_jobs_finished_total{state="done"} 1.0',
        'smartthumb_runner_jobs_created_total{runner="fallback"} 1.0',
        "smartthumb_thumbnailjobs_accepted_total 1.0",
    ):
        assert line in text
    assert "smartthumb_reconcile_seconds_count" in text
    assert "smartthumb_queue_depth" in text


def test_replicas_draw_different_peering_priorities(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replicas of one Deployment share their environment: with no SMARTTHUMB_PRIORITY each
    draws its own, since kopf pauses every replica of equal priority."""
    monkeypatch.setenv("SMARTTHUMB_VOLUME_HOST_PATH", "/data")
    monkeypatch.delenv("SMARTTHUMB_PRIORITY", raising=False)
    drawn = {OperatorSettings().priority for _ in range(20)}
    assert len(drawn) == 20 and all(priority > 0 for priority in drawn)
    monkeypatch.setenv("SMARTTHUMB_PRIORITY", "7")
    assert OperatorSettings().priority == 7
