"""The smartthumb operator, run in-process (kopf's KopfRunner) against the test control plane,
and the helpers its tests share: making ThumbnailJobs, reading their status, Events and Jobs."""

from __future__ import annotations

import contextlib
import json
import os
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conftest import poll
from kopf.testing import KopfRunner
from kubecluster import KubeCluster, free_port
from kubernetes import client
from kubernetes.client.rest import ApiException
from smartthumb.operator.kube.main import kopf_args
from smartthumb.operator.kube.resource import GROUP, KIND, PLURAL, VERSION
from smartthumb.operator.kube.settings import OperatorSettings
from smartthumb.runner.spec import Mode, OutputFormat, OutputReport, RunResult

SIMULATE_MESSAGE = "smartthumb.io/simulate-message"
SIMULATE_DURATION = "smartthumb.io/simulate-duration"


@dataclass
class OperatorHandle:
    runner: KopfRunner
    settings: OperatorSettings
    volume: Path

    def get(self, path: str) -> tuple[int, str]:
        """GET a path of the operator's metrics endpoint."""
        url = f"http://127.0.0.1:{self.settings.metrics_port}{path}"
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()

    def liveness(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.settings.liveness_port}/healthz"
        with urllib.request.urlopen(url, timeout=5) as answer:
            return json.loads(answer.read())


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def run_operator(cluster: KubeCluster, volume: Path, **overrides: str) -> Iterator[OperatorHandle]:
    """The operator in a thread of this process, until the block ends. It reads its settings
    from SMARTTHUMB_* variables at start-up, as in a pod."""
    env = {
        "KUBECONFIG": str(cluster.kubeconfig),
        "SMARTTHUMB_VOLUME_PATH": str(volume),
        "SMARTTHUMB_VOLUME_HOST_PATH": str(volume),
        "SMARTTHUMB_ALLOW_PRIVATE_WEBHOOKS": "true",  # the receivers are on loopback
        "SMARTTHUMB_METRICS_PORT": str(free_port()),
        "SMARTTHUMB_LIVENESS_PORT": str(free_port()),
        "SMARTTHUMB_SWEEP_INTERVAL_S": "0.5",
        "SMARTTHUMB_LEASE_NAME": f"st-{uuid.uuid4().hex[:8]}",
        "SMARTTHUMB_LEASE_NAMESPACE": "default",
        "SMARTTHUMB_LEASE_DURATION_S": "3",
        "SMARTTHUMB_IDENTITY": f"operator-{uuid.uuid4().hex[:8]}",
        "SMARTTHUMB_WEBHOOK_BACKOFF_S": "0.5",
        **{f"SMARTTHUMB_{key.upper()}": value for key, value in overrides.items()},
    }
    with environment(env):
        settings = OperatorSettings()
        runner = KopfRunner([*kopf_args(settings), "--verbose"], timeout=60)
        runner.__enter__()
        handle = OperatorHandle(runner, settings, volume)
        try:
            poll("the operator's liveness endpoint", lambda: _alive(handle), timeout=60)
        except BaseException:
            runner.__exit__(None, None, None)
            raise
    try:
        yield handle
    finally:
        runner.__exit__(None, None, None)


def _alive(handle: OperatorHandle) -> bool:
    if not handle.runner._thread.is_alive():
        raise AssertionError(f"the operator exited:\n{handle.runner.output[-4000:]}")
    try:
        return handle.liveness() is not None
    except OSError:
        return False


def result_json(**update: Any) -> str:
    """What a real runner writes to its termination log (kwok hands it back for the pod)."""
    result = RunResult(
        mode=Mode.crop,
        method="crop:face+saliency",
        output=OutputReport(format=OutputFormat.jpeg, width=300, height=300, bytes=12345),
        selected=[0],
    )
    return result.model_copy(update=update).model_dump_json()


def thumbnail_job(name: str, **spec: Any) -> dict[str, Any]:
    body = {"sources": [{"path": "in/photo.jpg"}], "mode": "crop", "width": 300, "height": 300}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name},
        "spec": {**body, **spec},
    }


def simulated(
    message: str | None = None,
    duration: str | None = None,
    labels: dict[str, str] | None = None,
    **annotations: str,
) -> dict[str, Any]:
    """spec.runnerPod steering kwok: how the pod ends and what its termination message is."""
    if message is not None:
        annotations[SIMULATE_MESSAGE] = message
    if duration is not None:
        annotations[SIMULATE_DURATION] = duration
    return {"annotations": annotations, "labels": labels or {}}


class Cluster:
    """The calls the tests make, with plain JSON answers."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.namespace = namespace
        self.custom = client.CustomObjectsApi(api)
        self.batch = client.BatchV1Api(api)
        self.core = client.CoreV1Api(api)

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        return self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, obj
        )

    def get(self, name: str) -> dict[str, Any] | None:
        try:
            return self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def status(self, name: str) -> dict[str, Any]:
        obj = self.get(name)
        return (obj or {}).get("status") or {}

    def wait_phase(self, name: str, *phases: str, timeout: float = 60) -> dict[str, Any]:
        poll(
            f"{name} to reach {'/'.join(phases)}",
            lambda: self.status(name).get("phase") in phases,
            timeout=timeout,
        )
        return self.status(name)

    def finished(self, name: str, timeout: float = 60) -> dict[str, Any]:
        """The status once the job is Succeeded or Failed."""
        return self.wait_phase(name, "Succeeded", "Failed", timeout=timeout)

    def conditions(self, name: str) -> dict[str, dict[str, Any]]:
        return {c["type"]: c for c in self.status(name).get("conditions", [])}

    def events(self, name: str) -> list[tuple[str, str]]:
        found = self.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={name}"
        ).items
        found.sort(key=lambda event: event.event_time)
        return [(event.reason, event.message) for event in found]

    def event_reasons(self, name: str) -> list[str]:
        return [reason for reason, _ in self.events(name)]

    def jobs(self) -> list[Any]:
        return self.batch.list_namespaced_job(self.namespace).items

    def pods(self) -> list[Any]:
        return self.core.list_namespaced_pod(self.namespace).items
