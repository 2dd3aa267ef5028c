"""The batch/v1 Job that runs one attempt of a ThumbnailJob: a pure manifest builder."""

from __future__ import annotations

import hashlib
from typing import Any

from smartthumb.operator.kube.classify import RUNNER_CONTAINER
from smartthumb.operator.kube.resource import GROUP, KIND, VERSION, ThumbnailJobSpec, mib_quantity
from smartthumb.operator.kube.settings import OperatorSettings
from smartthumb.operator.kube.storage import RUNNER_UID
from smartthumb.operator.lifecycle import RunRunner
from smartthumb.runner.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_OUT_OF_MEMORY

MANAGED_BY = "app.kubernetes.io/managed-by"
OPERATOR = "smartthumb-operator"
OWNER_LABEL = f"{GROUP}/thumbnailjob"
ATTEMPT_LABEL = f"{GROUP}/attempt"
RUNNER_LABEL = f"{GROUP}/runner"
CHILD_SELECTOR = f"{MANAGED_BY}={OPERATOR}"
"""What the operator's watch on Jobs is limited to (server-side)."""
TERMINATION_LOG = "/dev/termination-log"
NAME_LIMIT = 63
"""Job names become a pod label value (job-name): at most 63 characters."""
SINGLE_THREADED = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def _short(name: str, room: int) -> str:
    """`name` itself when it fits in `room` characters, else a prefix plus a hash."""
    if len(name) <= room:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: room - 9].rstrip('-.')}-{digest}"


def child_job_name(tj_name: str, attempt: int) -> str:
    """Deterministic: a restarted operator finds (or re-creates) the same Job, never a second."""
    suffix = f"-{attempt}"
    return _short(tj_name, NAME_LIMIT - len(suffix)) + suffix


def owner_label_value(tj_name: str) -> str:
    return _short(tj_name, NAME_LIMIT)


def runner_args(
    spec: ThumbnailJobSpec, sources: list[str], output: str, run: RunRunner
) -> list[str]:
    """The runner CLI's contract (`smartthumb crop ...`), as the local engine invokes it."""
    args = ["crop", "--spec", spec.thumbnail_spec().model_dump_json(), "-o", output]
    args += ["--termination-log", TERMINATION_LOG]
    if run.fallback:
        args += ["--fallback", "--fallback-reason", run.reason or "fallback"]
    return [*args, *sources]


def _volume(settings: OperatorSettings) -> dict[str, Any]:
    if settings.volume_claim is not None:
        return {"name": "data", "persistentVolumeClaim": {"claimName": settings.volume_claim}}
    return {
        "name": "data",
        "hostPath": {"path": settings.volume_host_path, "type": "Directory"},
    }


def child_job(
    tj: dict[str, Any],
    spec: ThumbnailJobSpec,
    run: RunRunner,
    sources: list[str],
    output: str,
    settings: OperatorSettings,
) -> dict[str, Any]:
    """The Job of attempt `run.attempt`: memory request = limit, restricted security
    context, the result handed back in the termination message."""
    meta = tj["metadata"]
    memory = mib_quantity(run.memory_mb) if run.memory_mb else spec.resources.memory
    labels = {
        **spec.runner_pod.labels,
        MANAGED_BY: OPERATOR,
        "app.kubernetes.io/name": "smartthumb-runner",
        OWNER_LABEL: owner_label_value(meta["name"]),
        ATTEMPT_LABEL: str(run.attempt),
        RUNNER_LABEL: "fallback" if run.fallback else "main",
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUNNER_UID,
            "runAsGroup": RUNNER_UID,
            "fsGroup": RUNNER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": RUNNER_CONTAINER,
                "image": (settings.fallback_image if run.fallback else None)
                or settings.runner_image,
                "imagePullPolicy": settings.runner_image_pull_policy,
                "command": ["smartthumb"],
                "args": runner_args(spec, sources, output, run),
                "env": [
                    {"name": k, "value": v}
                    for k, v in {**SINGLE_THREADED, **settings.runner_env()}.items()
                ],
                "resources": {
                    "requests": {"memory": memory, "cpu": spec.resources.cpu},
                    "limits": {"memory": memory},
                },
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "runAsNonRoot": True,
                    "capabilities": {"drop": ["ALL"]},
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "terminationMessagePath": TERMINATION_LOG,
                "terminationMessagePolicy": "File",
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
            }
        ],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
    }
    if settings.storage == "volume":  # with object storage the pod has URLs, not a volume
        pod_spec["containers"][0]["volumeMounts"].insert(
            0, {"name": "data", "mountPath": str(settings.volume_path)}
        )
        pod_spec["volumes"].insert(0, _volume(settings))
    node_selector = {**settings.runner_node_selector, **spec.runner_pod.node_selector}
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    tolerations = [*settings.runner_tolerations, *spec.runner_pod.tolerations]
    if tolerations:
        pod_spec["tolerations"] = [
            t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in tolerations
        ]
    priority_class = spec.runner_pod.priority_class_name or settings.runner_priority_class
    if priority_class:
        pod_spec["priorityClassName"] = priority_class
    if settings.runner_service_account:
        pod_spec["serviceAccountName"] = settings.runner_service_account
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": child_job_name(meta["name"], run.attempt),
            "namespace": meta["namespace"],
            "labels": labels,
            "ownerReferences": [
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": KIND,
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": spec.timeout_seconds,
            "ttlSecondsAfterFinished": settings.runner_job_ttl_s,
            # A disrupted pod (preempted, evicted) is replaced without counting as a failure;
            # the runner's own verdicts and an OOM kill end the Job at once.
            "podFailurePolicy": {
                "rules": [
                    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": RUNNER_CONTAINER,
                            "operator": "In",
                            "values": [EXIT_INTERNAL, EXIT_BAD_INPUT, EXIT_OUT_OF_MEMORY, 137],
                        },
                    },
                ]
            },
            "template": {
                "metadata": {"labels": labels, "annotations": dict(spec.runner_pod.annotations)},
                "spec": pod_spec,
            },
        },
    }
