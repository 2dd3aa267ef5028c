"""The API's Kubernetes backend on the real control plane (no operator here: these are about
the backend itself): reads from the watch-fed cache, changes made by others reach it,
batches are all-or-none, readiness and liveness."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apiserver import encode
from conftest import poll, thumbnailjob
from kubecluster import KubeCluster, free_port
from kubernetes import client
from PIL import Image
from smartthumb.operator.backend import InputError, InputFile, UnknownJobError
from smartthumb.operator.kube.backend import KubernetesBackend
from smartthumb.operator.kube.resource import GROUP, PLURAL, VERSION
from smartthumb.operator.kube.settings import KubernetesBackendSettings
from smartthumb.operator.models import JobState
from smartthumb.runner.spec import Mode, ThumbnailSpec

pytestmark = pytest.mark.cluster

SPEC = ThumbnailSpec(mode=Mode.fit, width=20)
PNG = encode(Image.new("RGB", (40, 30), "green"), "PNG")


def png(name: str = "g.png") -> InputFile:
    return InputFile(name=name, data=PNG)


@pytest.fixture
def backend(
    kube_cluster: KubeCluster, installed_crd: str, namespace: str, tmp_path: Path
) -> Iterator[KubernetesBackend]:
    settings = KubernetesBackendSettings(namespace=namespace, volume_path=tmp_path)
    running = KubernetesBackend(settings, kube_cluster.api_client())
    running.start()
    yield running
    running.stop()


def custom(api: Any) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


def test_reads_never_ask_the_api_server(backend: KubernetesBackend) -> None:
    job = backend.submit(SPEC, [png()], batch_id="b")
    calls: list[str] = []
    call_api = backend._api.call_api

    def counting(*args: Any, **kwargs: Any) -> Any:  # a spy on the real client
        calls.append(str(args[0]))
        return call_api(*args, **kwargs)

    backend._api.call_api = counting
    for _ in range(200):
        assert backend.get(job.id) is not None
        assert [one.id for one in backend.list_batch("b")] == [job.id]
        backend.stats()
    assert calls == []
    # Nor convert the resource again while it is unchanged: one Job per resourceVersion.
    first, again = backend.get(job.id), backend.get(job.id)
    assert first.revision is not None and first.revision == again.revision
    assert first.spec is again.spec


def test_jobs_made_elsewhere_reach_the_cache_and_wake_long_polls(
    backend: KubernetesBackend, api: Any, namespace: str
) -> None:
    body = thumbnailjob("outside", {"mode": "fit", "width": 20, "sources": [{"path": "a.png"}]})
    custom(api).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    job = poll("the watch to bring it", lambda: backend.get("outside"), timeout=10)
    assert job.state is JobState.queued and job.queue_position == 1

    woken: list[Any] = []
    waiter = threading.Thread(target=lambda: woken.append(backend.wait("outside", 20)))
    waiter.start()
    custom(api).patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        "outside",
        {"status": {"phase": "Failed", "message": "made up by the test"}},
    )
    waiter.join(timeout=10)
    assert woken and woken[0].state is JobState.failed
    assert woken[0].error == "made up by the test"

    gone: list[BaseException] = []

    def wait_for_the_deletion() -> None:
        try:
            backend.wait("outside", 20)
        except BaseException as error:  # noqa: BLE001 - handed to the test
            gone.append(error)

    custom(api).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "outside", {"status": {"phase": "Running"}}
    )
    poll("Running in the cache", lambda: backend.get("outside").state is JobState.running)
    waiter = threading.Thread(target=wait_for_the_deletion)
    waiter.start()
    custom(api).delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "outside")
    waiter.join(timeout=10)
    assert gone and isinstance(gone[0], UnknownJobError)
    assert backend.get("outside") is None


@pytest.fixture
def refusing_policy(api: Any, namespace: str) -> Iterator[None]:
    """A ValidatingAdmissionPolicy of the cluster that refuses ThumbnailJobs of images named
    "refused*" in `namespace` (as a cluster's own rules might)."""
    admission = client.AdmissionregistrationV1Api(api)
    name = f"refuse-{namespace}"
    admission.create_validating_admission_policy(
        {
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": [GROUP],
                            "apiVersions": ["*"],
                            "operations": ["CREATE"],
                            "resources": [PLURAL],
                        }
                    ]
                },
                "validations": [
                    {
                        "expression": "!has(object.metadata.annotations) || !object.metadata."
                        "annotations['smartthumb.dev/input-names'].contains('refused')",
                        "message": "this cluster refuses images named refused*",
                        "reason": "Invalid",
                    }
                ],
            },
        }
    )
    admission.create_validating_admission_policy_binding(
        {
            "metadata": {"name": name},
            "spec": {
                "policyName": name,
                "validationActions": ["Deny"],
                "matchResources": {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
                },
            },
        }
    )
    probe = thumbnailjob("probe", {"mode": "fit", "width": 20, "sources": [{"path": "a.png"}]})
    probe["metadata"]["annotations"] = {"smartthumb.dev/input-names": '["refused.png"]'}

    def refused() -> bool:
        try:
            custom(api).create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, probe, dry_run="All"
            )
        except client.ApiException as error:
            return error.status == 422
        return False

    poll("the policy to be in force", refused)
    yield
    admission.delete_validating_admission_policy_binding(name)
    admission.delete_validating_admission_policy(name)


def test_a_batch_the_cluster_refuses_in_part_leaves_nothing(
    backend: KubernetesBackend, api: Any, namespace: str, tmp_path: Path, refusing_policy: None
) -> None:
    inputs = [png("first.png"), png("second.png"), png("refused.png")]
    with pytest.raises(InputError, match="this cluster refuses images named refused"):
        backend.submit_batch(SPEC, inputs, "big")
    assert not custom(api).list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
    assert not list((tmp_path / "smartthumb" / namespace).glob("*"))
    assert backend.list_batch("big") == []
    assert len(backend.submit_batch(SPEC, inputs[:2], "small")) == 2


def test_readiness_names_what_is_missing_and_liveness_does_not_depend_on_it(
    kube_cluster: KubeCluster, installed_crd: str, namespace: str, tmp_path: Path
) -> None:
    ready = KubernetesBackend(
        KubernetesBackendSettings(namespace=namespace, volume_path=tmp_path),
        kube_cluster.api_client(),
    )
    read_only = KubernetesBackend(
        KubernetesBackendSettings(namespace=namespace, volume_path=Path("/proc/sys")),
        kube_cluster.api_client(),
    )
    unreachable_api = kube_cluster.api_client()
    unreachable_api.configuration.host = f"https://127.0.0.1:{free_port()}"
    unreachable = KubernetesBackend(
        KubernetesBackendSettings(namespace=namespace, volume_path=tmp_path), unreachable_api
    )
    unreachable.first_sync_s = 1
    backends = [ready, read_only, unreachable]
    try:
        for one in backends:
            one.start()
        assert ready.unready_reason() is None
        assert "the shared volume is not writable" in (read_only.unready_reason() or "")
        reason = unreachable.unready_reason() or ""
        assert reason.startswith("ThumbnailJobs not listed: cannot reach the API server"), reason
        assert all(one.healthy() for one in backends)
    finally:
        for one in backends:
            one.stop()
    assert not ready.healthy()


def test_a_watch_from_a_compacted_version_lists_again(
    kube_cluster: KubeCluster, installed_crd: str, namespace: str, api: Any, tmp_path: Path
) -> None:
    """410 Gone, for real: the API server no longer has the version the watch resumes from
    (here: the first list is made to hand on version 1). The cache lists again and goes on."""
    backend = KubernetesBackend(
        KubernetesBackendSettings(namespace=namespace, volume_path=tmp_path),
        kube_cluster.api_client(),
    )
    cache = backend._cache
    real_list = cache._list
    lists: list[str] = []

    def first_version_too_old() -> str:
        version = real_list()
        lists.append(version)
        return "1" if len(lists) == 1 else version

    cache._list = first_version_too_old  # type: ignore[method-assign]
    backend.start()
    try:
        poll("a second list after 410 Gone", lambda: len(lists) >= 2, timeout=20)
        body = thumbnailjob("after", {"mode": "fit", "width": 20, "sources": [{"path": "a.png"}]})
        custom(api).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
        poll("the watch to go on", lambda: backend.get("after"), timeout=10)
        assert len(lists) == 2 and backend.unready_reason() is None
    finally:
        backend.stop()


def test_a_deleted_event_that_wins_the_race_with_cancel_still_keeps_stale_copies_out(
    backend: KubernetesBackend, api: Any, namespace: str
) -> None:
    job = backend.submit(SPEC, [png()])
    before = poll("the job in the cache", lambda: backend._cache.get(job.id))
    backend._cache._drop(before)  # the watch's DELETED event, before cancel's forget()
    backend._cache.forget(job.id)  # nothing left to forget
    backend._cache._store(before)  # then a stale copy (an event in flight, an old list)
    assert backend.get(job.id) is None


def test_a_cancelled_job_is_gone_at_once_and_late_events_do_not_bring_it_back(
    backend: KubernetesBackend, api: Any, namespace: str
) -> None:
    job = backend.submit(SPEC, [png()], batch_id="b")
    custom(api).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, job.id, {"status": {"phase": "Running"}}
    )
    before = poll(
        "the status write in the cache",
        lambda: (
            (obj := backend._cache.get(job.id)) and (obj.get("status") or {}).get("phase") and obj
        ),
    )
    backend.cancel(job.id)
    assert backend.get(job.id) is None and backend.list_batch("b") == []  # no watch wait
    with pytest.raises(UnknownJobError):
        backend.cancel(job.id)
    # A watch event of the object as it was, arriving after the delete, changes nothing.
    backend._cache._store(before)
    assert backend.get(job.id) is None
    time.sleep(1)  # the real DELETED event, and any other, have come by now
    assert backend.get(job.id) is None
    assert not custom(api).list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
