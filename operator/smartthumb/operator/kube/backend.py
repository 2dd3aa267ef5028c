"""The API's Kubernetes backend: a submitted job becomes a ThumbnailJob (its inputs first
written to the shared volume or the bucket), which smartthumb-operator runs; reads come from
a watch-fed cache of the namespace's ThumbnailJobs."""

from __future__ import annotations

import json
import logging
import secrets
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException
from pydantic import ValidationError
from smartthumb.operator.backend import (
    InputError,
    InputFile,
    QueueFullError,
    UnknownJobError,
    check_webhook,
)
from smartthumb.operator.kube.convert import (
    API_URL,
    BATCH_LABEL,
    job_from_resource,
    output_of,
    parse,
)
from smartthumb.operator.kube.objectstore import ObjectStore
from smartthumb.operator.kube.resource import (
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    Phase,
    S3Object,
    Source,
    ThumbnailJobSpec,
    Webhook,
)
from smartthumb.operator.kube.runtime import client_configuration
from smartthumb.operator.kube.settings import KubernetesBackendSettings
from smartthumb.operator.kube.storage import JOBS_DIR, job_prefix
from smartthumb.operator.kube.watchcache import ThumbnailJobCache
from smartthumb.operator.metrics import METRICS, Metrics
from smartthumb.operator.models import Job, JobState, QueueStats
from smartthumb.operator.waiters import Waiters
from smartthumb.runner.spec import ThumbnailSpec

log = logging.getLogger(__name__)

Obj = dict[str, Any]
INPUT_NAMES = "smartthumb.dev/input-names"
"""Annotation: the inputs' original file names (JSON list); the sources are server-chosen."""
CREATED_BY = {"app.kubernetes.io/created-by": "smartthumb-api"}
CRD_NAME = f"{PLURAL}.{GROUP}"
FIRST_SYNC_S = 10.0
"""start() waits this long for the first list; after that readiness tells."""
CHECK_EVERY_S = 10.0
"""The CRD and the volume are checked for readiness at most this often."""


def _ordered_id() -> str:
    """32 hex digits, the creation time in milliseconds first (as in a UUIDv7): the operator
    breaks ties of one creation second by name, so jobs submitted in one second still run
    in the order they came."""
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(10)}"


def _age(obj: Obj) -> tuple[str, str]:
    """The operator's admission order: oldest first, then by name."""
    return obj["metadata"].get("creationTimestamp") or "", obj["metadata"]["name"]


def _safe_suffix(name: str) -> str:
    suffix = Path(name).suffix.lower()
    return suffix if suffix[1:].isalnum() and len(suffix) <= 6 else ""


class KubernetesBackend:
    submits_locally = False  # a create on the API server
    first_sync_s = FIRST_SYNC_S

    def __init__(
        self,
        settings: KubernetesBackendSettings,
        api: client.ApiClient | None = None,
        metrics: Metrics = METRICS,
    ) -> None:
        self.settings = settings
        self.ttl_s = float(settings.ttl_s)
        self._api = api or client.ApiClient(client_configuration())
        self._custom = client.CustomObjectsApi(self._api)
        self._lock = threading.RLock()
        self._waiters = Waiters(self._lock)
        self._jobs: dict[str, tuple[int, Job | None]] = {}
        """Each cached object as a Job (None: not one this API can describe), by name, with
        the resourceVersion it was made of: a status poll converts nothing."""
        self._cache = ThumbnailJobCache(self._custom, settings.namespace, self._lock, self._changed)
        self._store = ObjectStore(settings) if settings.storage == "s3" else None
        self._checked_at = -CHECK_EVERY_S
        self._check_problem: str | None = None
        # The queue gauges of the API's /metrics; job counters are the operator's metrics.
        metrics.watch(self.stats)

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self._cache.start(self.first_sync_s)

    def stop(self, graceful: bool = True) -> None:
        """The jobs go on in the cluster; only the watch stops."""
        self._cache.stop()
        self._api.close()

    def healthy(self) -> bool:
        return self._cache.alive()

    def unready_reason(self) -> str | None:
        if not self._cache.synced.is_set():
            return f"ThumbnailJobs not listed: {self._cache.problem}"
        if time.monotonic() - self._checked_at >= CHECK_EVERY_S:
            self._check_problem = self._crd_problem() or self._volume_problem()
            self._checked_at = time.monotonic()
        return self._check_problem

    def _crd_problem(self) -> str | None:
        try:
            crd = client.ApiextensionsV1Api(self._api).read_custom_resource_definition(CRD_NAME)
        except ApiException as error:
            if error.status == 404:
                return f"the CustomResourceDefinition {CRD_NAME} is not installed"
            return f"cannot read the CustomResourceDefinition {CRD_NAME}: {error.status}"
        except Exception as error:  # noqa: BLE001 - unreachable: not ready, with the reason
            return f"cannot reach the API server: {type(error).__name__}"
        conditions = {c.type: c.status for c in (crd.status.conditions or [])}
        if conditions.get("Established") != "True":
            return f"the CustomResourceDefinition {CRD_NAME} is not established"
        return None

    def _changed(self, name: str) -> None:
        self._waiters.notify(name)
        if self._cache.get(name) is None:  # the job is gone
            self._jobs.pop(name, None)
            if self._store is not None:
                shutil.rmtree(self.settings.cache_dir / name, ignore_errors=True)

    def _volume_problem(self) -> str | None:
        if self._store is not None:
            return self._store.problem()
        folder = self._jobs_dir()
        probe = folder / f".ready-{uuid.uuid4().hex}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            return f"the shared volume is not writable at {folder}: {error.strerror}"
        return None

    # --- submitting -----------------------------------------------------------------------------

    def submit(
        self,
        spec: ThumbnailSpec,
        inputs: Sequence[InputFile],
        *,
        webhook_url: str | None = None,
        batch_id: str | None = None,
        api_url: str | None = None,
    ) -> Job:
        check_webhook(webhook_url, self.settings.allow_private_webhooks)
        return self._create_all(spec, [list(inputs)], webhook_url, batch_id, api_url)[0]

    def submit_batch(
        self, spec: ThumbnailSpec, inputs: Sequence[InputFile], batch_id: str
    ) -> list[Job]:
        return self._create_all(spec, [[one] for one in inputs], None, batch_id)

    def _create_all(
        self,
        spec: ThumbnailSpec,
        groups: list[list[InputFile]],
        webhook_url: str | None,
        batch_id: str | None,
        api_url: str | None = None,
    ) -> list[Job]:
        """One ThumbnailJob per group of inputs: all created, or none (those made before a
        failure are deleted with their files)."""
        self._check_capacity(len(groups))
        created: list[str] = []
        try:
            for inputs in groups:
                name = _ordered_id()
                created.append(name)
                self._create(name, spec, inputs, webhook_url, batch_id, api_url)
        except BaseException:
            for name in created:
                try:
                    self._delete(name)
                except ApiException as error:  # the original failure is the one to report
                    log.warning("ThumbnailJob %s of a refused batch not deleted: %s", name, error)
            raise
        jobs = [self.get(name) for name in created]
        return [job for job in jobs if job is not None]

    def _check_capacity(self, count: int) -> None:
        waiting = len(self._waiting())
        if waiting + count > self.settings.queue_capacity:
            raise QueueFullError(
                f"{waiting} jobs are waiting, the queue holds {self.settings.queue_capacity}; "
                "try again later"
            )

    def _create(
        self,
        name: str,
        spec: ThumbnailSpec,
        inputs: list[InputFile],
        webhook_url: str | None,
        batch_id: str | None,
        api_url: str | None,
    ) -> None:
        if not inputs:
            raise InputError("at least one input image is needed")
        try:
            job_spec = ThumbnailJobSpec(
                **spec.model_dump(),
                sources=self._write_inputs(name, inputs),
                timeout_seconds=self.settings.job_timeout_s,
                ttl_seconds_after_finished=self.settings.ttl_s,
                webhook=Webhook(url=webhook_url) if webhook_url else None,
            )
        except ValidationError as error:
            raise InputError(str(error.errors()[0]["msg"])) from None
        labels = {**CREATED_BY, **({BATCH_LABEL: batch_id} if batch_id else {})}
        annotations = {INPUT_NAMES: json.dumps([item.name for item in inputs])}
        if api_url:
            annotations[API_URL] = api_url
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {
                "name": name,
                "labels": labels,
                "annotations": annotations,
            },
            "spec": job_spec.model_dump(mode="json", by_alias=True, exclude_none=True),
        }
        try:
            made = self._custom.create_namespaced_custom_object(
                GROUP, VERSION, self.settings.namespace, PLURAL, body
            )
        except ApiException as error:
            if error.status in (400, 422):
                raise InputError(_api_message(error)) from None
            raise
        self._cache.put(made)

    def _jobs_dir(self) -> Path:
        return self.settings.volume_path / JOBS_DIR / self.settings.namespace

    def _write_inputs(self, name: str, inputs: list[InputFile]) -> list[Source]:
        """Each input as a source: its bytes (an upload, or a file the API read from
        SMARTTHUMB_INPUT_ROOT) on the shared volume, readable by the runner pods, or in the
        bucket; URLs as they are."""
        prefix = job_prefix(self.settings.namespace, name)
        if self._store is None:
            folder = self.settings.volume_path / prefix / "inputs"
            folder.mkdir(parents=True, exist_ok=True)
            for directory in (folder, folder.parent):
                directory.chmod(0o755)
        return [self._write_input(prefix, index, item) for index, item in enumerate(inputs)]

    def _write_input(self, prefix: str, index: int, item: InputFile) -> Source:
        if item.url is not None:
            return Source(url=item.url)
        stored = f"{prefix}inputs/{index:03d}{_safe_suffix(item.name)}"
        content = item.data or b""
        if self._store is not None:
            self._store.put(stored, content)
            return Source(s3=S3Object(bucket=self._store.bucket, key=stored))
        target = self.settings.volume_path / stored
        target.write_bytes(content)
        target.chmod(0o644)
        return Source(path=stored)

    def _delete(self, name: str) -> None:
        """The ThumbnailJob (gone for readers at once) and the files the API wrote for it.
        Raises ApiException when the API server refuses (a 404 is done already)."""
        try:
            self._custom.delete_namespaced_custom_object(
                GROUP, VERSION, self.settings.namespace, PLURAL, name
            )
        except ApiException as error:
            if error.status != 404:
                raise
        self._cache.forget(name)
        if self._store is not None:
            self._store.delete_prefix(job_prefix(self.settings.namespace, name))
        else:
            shutil.rmtree(self._jobs_dir() / name, ignore_errors=True)

    # --- reading ------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        obj = self._cache.get(job_id)
        if obj is None:
            return None
        # etcd's revision of the object: it changes with every write of it.
        revision = int(obj["metadata"].get("resourceVersion") or 0)
        held = self._jobs.get(job_id)
        if held is not None and revision and held[0] == revision:
            job = held[1]
        else:
            job = _job_of(obj, revision)
            self._jobs[job_id] = (revision, job)
        if (
            job is None
            or job.state is JobState.expired
            or (job.expires_at is not None and job.expires_at <= datetime.now(UTC))
        ):
            return None  # the operator deletes it soon
        if job.state is JobState.queued:
            # The operator admits the oldest first: the place is known here at once, while
            # status.queuePosition is written only every few seconds.
            ahead = [other for other in self._waiting() if _age(other) < _age(obj)]
            return job.model_copy(update={"queue_position": len(ahead) + 1})
        return job

    def _waiting(self) -> list[Obj]:
        return [
            obj
            for obj in self._cache.objects()
            if (obj.get("status") or {}).get("phase") in (None, Phase.queued.value)
        ]

    def cancel(self, job_id: str) -> None:
        """Delete the ThumbnailJob (its Jobs and pods go with it, by owner reference) and
        the files the API wrote; a run still writing leaves an orphan the operator removes."""
        if self.get(job_id) is None:
            raise UnknownJobError(job_id)
        self._delete(job_id)

    def wait(self, job_id: str, timeout: float) -> Job:
        return self._waiters.wait(job_id, lambda: self.get(job_id), timeout)

    def subscribe(self, job_id: str, changed: Callable[[], None]) -> Callable[[], None]:
        return self._waiters.subscribe(job_id, changed)

    def list_batch(self, batch_id: str) -> list[Job]:
        batch = [
            obj
            for obj in self._cache.objects()
            if (obj["metadata"].get("labels") or {}).get(BATCH_LABEL) == batch_id
        ]
        batch.sort(key=_age)
        jobs = (self.get(obj["metadata"]["name"]) for obj in batch)
        return [job for job in jobs if job is not None]

    def output_file(self, job: Job) -> Path | None:
        obj = self._cache.get(job.id)
        if obj is None or job.state is not JobState.done:
            return None
        stored = output_of(obj, parse(obj)[0])
        if self._store is None:
            path = self.settings.volume_path / stored
            return path if path.is_file() else None
        # A local copy, made once: variants are cached beside it, as on the volume.
        copy = self.settings.cache_dir / job.id / Path(stored).name
        if copy.is_file() or self._store.download(stored, copy):
            return copy
        return None

    def output_url(self, job: Job) -> str | None:
        obj = self._cache.get(job.id)
        if self._store is None or not self.settings.s3_redirect or obj is None:
            return None
        return self._store.url_to_get(output_of(obj, parse(obj)[0]))

    def stats(self) -> QueueStats:
        phases = [(obj.get("status") or {}).get("phase") for obj in self._cache.objects()]
        return QueueStats(
            queued=sum(1 for phase in phases if phase in (None, Phase.queued.value)),
            running=phases.count(Phase.running.value),
            capacity=self.settings.queue_capacity,
            workers=self.settings.max_running,
        )


def _job_of(obj: dict[str, Any], revision: int) -> Job | None:
    """The Job a ThumbnailJob describes, or None for one this API cannot describe (e.g. a
    status written by a newer operator). Never changed once made (it is kept)."""
    try:
        job = job_from_resource(obj)
    except (ValidationError, KeyError, ValueError):
        return None
    names = (obj["metadata"].get("annotations") or {}).get(INPUT_NAMES)
    if names:
        job.input_names = json.loads(names)
    job.revision = revision or None
    return job


def _api_message(error: ApiException) -> str:
    """The API server's own words (a CEL rule's message, a schema violation)."""
    try:
        return str(json.loads(error.body)["message"])
    except (TypeError, ValueError, KeyError):
        return f"refused by the Kubernetes API server: {error.status} {error.reason}"
