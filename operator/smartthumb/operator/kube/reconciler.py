"""Carries the lifecycle out on Kubernetes: read a ThumbnailJob, decide, write its status,
then act (create or stop a runner Job, post Events, delete what expired).

Every write of a status is conditional on the resourceVersion that was read (a conflict means
somebody else moved first: read again and decide again), and every action is idempotent
(deterministic Job names, 404/409 tolerated), so handlers may run twice, late, in any order
and on any replica.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, cast

from kubernetes import client
from kubernetes.client.rest import ApiException
from pydantic import ValidationError
from smartthumb.operator.kube.childjob import (
    ATTEMPT_LABEL,
    CHILD_SELECTOR,
    OPERATOR,
    OWNER_LABEL,
    child_job,
    child_job_name,
    owner_label_value,
)
from smartthumb.operator.kube.classify import classify_job, interruptions, job_finished
from smartthumb.operator.kube.convert import events, job_from_resource, parse, status_from_job
from smartthumb.operator.kube.metrics import OperatorMetrics
from smartthumb.operator.kube.resource import GROUP, KIND, PLURAL, VERSION, ThumbnailJobSpec
from smartthumb.operator.kube.settings import OperatorSettings
from smartthumb.operator.kube.storage import SourceError, Storage
from smartthumb.operator.lifecycle import (
    DeleteArtifacts,
    Event,
    Expire,
    Rejected,
    RunnerExited,
    RunRunner,
    StopRunner,
    Transition,
    current_run,
    decide,
)
from smartthumb.operator.models import FailureReason, Job, JobState, RunOutcome
from smartthumb.runner.netguard import RefusedURL, check_url

log = logging.getLogger(__name__)

Obj = dict[str, Any]
CONFLICT_RETRIES = 8
OWNERS_PER_LIST = 100
"""Owner label values in one LIST's selector (its URL stays a few KiB)."""
BACKGROUND = client.V1DeleteOptions(propagation_policy="Background")


def now() -> datetime:
    return datetime.now(UTC)


def _json(response: Any) -> Any:
    """The body of a call made with _preload_content=False: plain JSON, no model objects
    (the client's own deserialisation costs more CPU than the whole reconcile)."""
    return json.loads(response.data)


def _drain(response: Any) -> None:
    """Read an unwanted body of a _preload_content=False call to its end: only then does the
    connection go back to the pool (unread, it is closed, and the next call pays a new TLS
    handshake, on both sides)."""
    response.drain_conn()
    response.release_conn()


class Reconciler:
    def __init__(
        self,
        settings: OperatorSettings,
        api: client.ApiClient,
        storage: Storage,
        metrics: OperatorMetrics,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.metrics = metrics
        self.wake = wake
        self.custom = client.CustomObjectsApi(api)
        self.batch = client.BatchV1Api(api)
        self.core = client.CoreV1Api(api)
        # One thread: Events go out in the order told, and no caller waits for them.
        self._events = ThreadPoolExecutor(1, thread_name_prefix="smartthumb-events")

    def close(self) -> None:
        """Post the Events still queued."""
        self._events.shutdown(wait=True)

    # --- reading ----------------------------------------------------------------------------------

    def get(self, namespace: str, name: str) -> Obj | None:
        try:
            return cast(
                Obj,
                _json(
                    self.custom.get_namespaced_custom_object(
                        GROUP, VERSION, namespace, PLURAL, name, _preload_content=False
                    )
                ),
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def list_jobs(self) -> list[Obj]:
        """Every ThumbnailJob the operator runs (from the API server's watch cache)."""
        if not self.settings.namespaces:
            answer = self.custom.list_cluster_custom_object(
                GROUP, VERSION, PLURAL, resource_version="0", _preload_content=False
            )
            return cast(list[Obj], _json(answer)["items"])
        items: list[Obj] = []
        for namespace in self.settings.namespaces:
            answer = self.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, resource_version="0", _preload_content=False
            )
            items.extend(_json(answer)["items"])
        return items

    def list_children(self, owners: list[Obj]) -> list[Obj]:
        """The runner Jobs of `owners`, selected on the server by their owner label: all Jobs
        stay until their TTL, thousands of them under load, and each is several KiB."""
        values: dict[str, set[str]] = {}
        for obj in owners:
            meta = obj["metadata"]
            values.setdefault(meta["namespace"], set()).add(owner_label_value(meta["name"]))
        items: list[Obj] = []
        for namespace, names in values.items():
            ordered = sorted(names)
            for start in range(0, len(ordered), OWNERS_PER_LIST):
                chosen = ",".join(ordered[start : start + OWNERS_PER_LIST])
                answer = self.batch.list_namespaced_job(
                    namespace,
                    label_selector=f"{CHILD_SELECTOR},{OWNER_LABEL} in ({chosen})",
                    resource_version="0",
                    _preload_content=False,
                )
                items.extend(_json(answer)["items"])
        return items

    def _pods(self, child: Obj) -> list[Obj]:
        meta = child["metadata"]
        answer = self.core.list_namespaced_pod(
            meta["namespace"],
            label_selector=f"batch.kubernetes.io/controller-uid={meta['uid']}",
            _preload_content=False,
        )
        return cast(list[Obj], _json(answer)["items"])

    # --- deciding -----------------------------------------------------------------------------------

    def apply(
        self, namespace: str, name: str, event: Event, seen: Obj | None = None
    ) -> Transition | None:
        """Decide `event` for the ThumbnailJob and carry the transition out; None when it is
        gone or unreadable. `seen`: the object as just listed, decided on without a GET (the
        write is conditional on its resourceVersion: a stale one costs a conflict and a read,
        never a wrong decision)."""
        for _ in range(CONFLICT_RETRIES):
            obj = seen if seen is not None else self.get(namespace, name)
            seen = None  # after a conflict: read it afresh
            if obj is None:
                return None
            try:
                job = job_from_resource(obj)
            except ValidationError as error:
                log.error("%s/%s: unreadable ThumbnailJob: %s", namespace, name, error)
                return None
            spec, _ = parse(obj)
            moment = now()
            started = time.perf_counter()
            transition = decide(
                job, event, moment, self.settings.policy(spec.ttl_seconds_after_finished)
            )
            if transition.changed and not self.write_status(obj, transition.job, moment):
                continue  # somebody else wrote first: decide again on what they wrote
            self.metrics.reconcile_seconds.observe(time.perf_counter() - started)
            if transition.changed:
                if job.state is JobState.running and transition.job.state is not JobState.running:
                    self.wake()  # a runner slot is free (or the job is queued again): admit now
                self.metrics.observe(job, event, transition)
                for kind, reason, message in events(job, transition.job):
                    self.post_event(obj, kind, reason, message)
            self._carry_out(obj, spec, transition)
            return transition
        log.warning("%s/%s: gave up after %d write conflicts", namespace, name, CONFLICT_RETRIES)
        return None

    def write_status(self, obj: Obj, job: Job, moment: datetime) -> Obj | None:
        """PUT the status, conditional on the resourceVersion read: the object as stored, or
        None on a conflict."""
        body = {**obj, "status": status_from_job(job, obj, moment)}
        meta = obj["metadata"]
        try:
            response = self.custom.replace_namespaced_custom_object_status(
                GROUP,
                VERSION,
                meta["namespace"],
                PLURAL,
                meta["name"],
                body,
                _preload_content=False,
            )
        except ApiException as error:
            if error.status in (404, 409):
                return None
            raise
        # Plain json, not the client's deserializer: this runs for every status write.
        stored: Obj = json.loads(response.data)
        return stored

    def accept(self, obj: Obj) -> Obj | None:
        """A ThumbnailJob seen for the first time: refuse it now if it can never run (its
        sources are missing or leave the volume, its webhook URL is refused), else queue it.
        Returns it as stored when this call queued it."""
        if (obj.get("status") or {}).get("phase"):
            return None
        meta = obj["metadata"]
        spec, _ = parse(obj)
        problem = self._problem(spec)
        if problem is not None:
            self.apply(meta["namespace"], meta["name"], problem)
            return None
        stored = self.write_status(obj, job_from_resource(obj), now())
        if stored is not None:
            self.post_event(obj, "Normal", "Queued", "waiting for a free runner slot")
            self.metrics.accepted.inc()
            self.wake()
        return stored

    def _problem(self, spec: ThumbnailJobSpec) -> Rejected | None:
        try:
            for source in spec.sources:
                self.storage.resolve_source(source)
        except SourceError as error:
            return Rejected(reason=error.reason, message=str(error))
        if spec.webhook is not None:
            try:
                check_url(spec.webhook.url, self.settings.allow_private_webhooks)
            except RefusedURL as error:
                return Rejected(
                    reason=FailureReason.webhook_refused, message=f"spec.webhook.url: {error}"
                )
        return None

    # --- the runner Jobs ----------------------------------------------------------------------------

    def observe_child(self, child: Obj) -> Transition | None:
        """A runner Job changed: report its end, or pods of it that were disrupted."""
        meta = child["metadata"]
        owner = next(
            (ref for ref in meta.get("ownerReferences") or [] if ref.get("kind") == KIND), None
        )
        attempt = (meta.get("labels") or {}).get(ATTEMPT_LABEL, "")
        if owner is None or not attempt.isdigit():
            return None
        status = child.get("status") or {}
        finished = job_finished(child)
        if not finished and not (status.get("failed") or status.get("terminating")):
            return None
        pods = self._pods(child)
        transition = None
        for interrupted in interruptions(pods, int(attempt)):
            transition = self.apply(meta["namespace"], owner["name"], interrupted)
        exited = classify_job(child, pods, int(attempt))
        if exited is not None:
            transition = self.apply(meta["namespace"], owner["name"], exited)
        return transition

    def ensure_child(self, obj: Obj, existing: set[tuple[str, str]]) -> None:
        """The current run of a running ThumbnailJob has its Job (it may not, when the
        operator stopped between writing the status and creating the Job)."""
        job = job_from_resource(obj)
        run = current_run(job)
        meta = obj["metadata"]
        if (
            run is None
            or (meta["namespace"], child_job_name(meta["name"], run.attempt)) in existing
        ):
            return
        spec, _ = parse(obj)
        action = RunRunner(
            attempt=run.attempt,
            fallback=run.fallback,
            reason=job.fallback_reason if run.fallback else None,
            memory_mb=run.memory_mb,
        )
        self._create_child(obj, spec, action)

    def _create_child(self, obj: Obj, spec: ThumbnailJobSpec, run: RunRunner) -> None:
        meta = obj["metadata"]
        try:
            sources = [self.storage.resolve_source(source) for source in spec.sources]
            output = self.storage.output_location(
                meta["namespace"], meta["name"], spec.output, spec.format.extension
            )
        except SourceError as error:  # the volume changed since the job was accepted
            exited = RunnerExited(
                attempt=run.attempt, outcome=RunOutcome.bad_input, message=str(error)
            )
            self.apply(meta["namespace"], meta["name"], exited)
            return
        manifest = child_job(obj, spec, run, sources, output, self.settings)
        try:
            _drain(
                self.batch.create_namespaced_job(
                    meta["namespace"], manifest, _preload_content=False
                )
            )
            self.metrics.runner_jobs.labels("fallback" if run.fallback else "main").inc()
        except ApiException as error:
            if error.status != 409:  # 409: made before a restart; adopt it
                raise

    def _stop_child(self, obj: Obj, attempt: int) -> None:
        meta = obj["metadata"]
        try:
            self.batch.delete_namespaced_job(
                child_job_name(meta["name"], attempt), meta["namespace"], body=BACKGROUND
            )
        except ApiException as error:
            if error.status != 404:
                raise

    # --- acting ------------------------------------------------------------------------------------

    def _carry_out(self, obj: Obj, spec: ThumbnailJobSpec, transition: Transition) -> None:
        meta = obj["metadata"]
        for action in transition.actions:
            if isinstance(action, RunRunner):
                self._create_child(obj, spec, action)
            elif isinstance(action, StopRunner):
                self._stop_child(obj, action.attempt)
            elif isinstance(action, DeleteArtifacts):
                self.storage.delete_job_files(meta["namespace"], meta["name"], spec.output)
            elif isinstance(action, Expire):
                self._delete(obj)
            else:  # DeliverWebhook: the sweep sends it (it alone retries and dedupes)
                self.wake()

    def _delete(self, obj: Obj) -> None:
        """The ThumbnailJob goes, and the garbage collector takes its Jobs and their pods."""
        meta = obj["metadata"]
        options = client.V1DeleteOptions(
            propagation_policy="Background", preconditions=client.V1Preconditions(uid=meta["uid"])
        )
        try:
            self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], body=options
            )
            self.metrics.expired.inc()
        except ApiException as error:
            if error.status not in (404, 409):
                raise

    def post_event(self, obj: Obj, kind: str, reason: str, message: str) -> None:
        """A core/v1 Event on the ThumbnailJob (what `kubectl describe` shows); best effort,
        posted by a thread of its own."""
        meta = obj["metadata"]
        stamp = now()
        moment = stamp.isoformat().replace("+00:00", "Z")
        # Named like client-go's (object.hex-nanoseconds) and with a microsecond eventTime:
        # Events of one transition list in the order told, even within one second.
        nanos = f"{int(stamp.timestamp() * 1e9):x}"
        body = {
            "metadata": {"name": f"{meta['name'][:200]}.{nanos}", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": KIND,
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "type": kind,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": OPERATOR},
            "reportingComponent": OPERATOR,
            "reportingInstance": self.settings.identity,
            "action": reason,
            "eventTime": moment,
            "firstTimestamp": moment,
            "lastTimestamp": moment,
            "count": 1,
        }
        try:
            self._events.submit(self._post_event, body)
        except RuntimeError:  # shut down already: post it from here
            self._post_event(body)

    def _post_event(self, body: Obj) -> None:
        namespace, name = body["metadata"]["namespace"], body["involvedObject"]["name"]
        try:
            _drain(self.core.create_namespaced_event(namespace, body, _preload_content=False))
        except ApiException as error:
            log.warning(
                "event %s on %s/%s not posted: %s", body["reason"], namespace, name, error.reason
            )
        except Exception as error:  # noqa: BLE001 - best effort, off the caller's thread
            log.warning("event %s on %s/%s not posted: %r", body["reason"], namespace, name, error)
