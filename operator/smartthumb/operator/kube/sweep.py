"""The operator's one background loop, run by the replica that holds a Lease: admission (at
most max_running runner Jobs, oldest ThumbnailJob first), webhook deliveries, TTL expiry and
repairs of anything a missed watch event left behind. No timer per object, no finalizer.

kopf's peering keeps one replica's handlers active, but kopf itself says it is no lock
between replicas; admission must never run twice at once, so it follows a Lease
(coordination.k8s.io), taken and renewed with the client library's leader election.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock
from pydantic import ValidationError
from smartthumb.operator.kube.childjob import ATTEMPT_LABEL
from smartthumb.operator.kube.classify import job_finished
from smartthumb.operator.kube.convert import Obj, job_from_resource, parse
from smartthumb.operator.kube.reconciler import Reconciler, now
from smartthumb.operator.kube.resource import KIND, Phase
from smartthumb.operator.kube.settings import OperatorSettings
from smartthumb.operator.lifecycle import Started, Tick, WebhookResponse
from smartthumb.operator.models import QueueStats
from smartthumb.operator.webhooks import WebhookSender

log = logging.getLogger(__name__)
logging.getLogger("leaderelection").setLevel(logging.WARNING)  # it logs every renewal

MIN_ROUND_GAP_S = 0.1
"""Wake-ups closer together than this share one round (events come in bursts)."""
HANDLER_HEADSTART_S = 5.0
"""A finished runner Job is the handlers' to report; the sweep repairs it only after this."""
POSITIONS_SHOWN = 100
"""Queue positions kept exact for the first N waiting jobs (each change is a status write)."""
POSITIONS_EVERY_S = 2.0
"""Positions are written at most this often: every admission moves all N of them, and under
load rounds come many times a second."""
ORPHAN_EVERY_S = 60.0
ORPHAN_GRACE_S = 600.0
WEBHOOK_SENDERS = 4


def _created(obj: Obj) -> tuple[str, str]:
    meta = obj["metadata"]
    return meta.get("creationTimestamp") or "", meta["name"]


def _key(obj: Obj) -> tuple[str, str]:
    return obj["metadata"]["namespace"], obj["metadata"]["name"]


def _phase(obj: Obj) -> str | None:
    return (obj.get("status") or {}).get("phase")


def _due(text: str | None, moment: datetime) -> bool:
    return text is not None and datetime.fromisoformat(text) <= moment


class Sweep:
    def __init__(
        self,
        settings: OperatorSettings,
        api: client.ApiClient,
        reconciler: Reconciler,
        sender: WebhookSender,
    ) -> None:
        self.settings = settings
        self.reconciler = reconciler
        self._sender = sender
        self._core = client.CoreV1Api(api)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._senders = ThreadPoolExecutor(WEBHOOK_SENDERS, thread_name_prefix="smartthumb-hook")
        self._delivering: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._elector = self._make_elector(api)
        self._leader_until = 0.0
        self._last_orphans = 0.0
        self._last_repair = 0.0
        self._positions = ThreadPoolExecutor(1, thread_name_prefix="smartthumb-positions")
        self._positions_busy = False
        self._positions_at = 0.0
        self._positions_behind = False
        self.stats = QueueStats(queued=0, running=0, capacity=0, workers=settings.max_running)
        self.last_round: float | None = None
        self.rounds = 0

    def _make_elector(self, api: client.ApiClient) -> leaderelection.LeaderElection:
        lock = LeaseLock(
            self.settings.lease_name, self.settings.lease_namespace, self.settings.identity
        )
        lock.api_instance = client.CoordinationV1Api(api)
        duration = self.settings.lease_duration_s
        config = electionconfig.Config(
            lock,
            lease_duration=duration,
            renew_deadline=max(2, duration * 2 // 3),
            retry_period=max(1, duration // 5),
            onstarted_leading=lambda: None,
            onstopped_leading=lambda: None,
        )
        return leaderelection.LeaderElection(config)

    # --- running ------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="smartthumb-sweep", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(30)
        self._senders.shutdown(wait=True, cancel_futures=True)
        self._positions.shutdown(wait=True, cancel_futures=True)
        self.reconciler.close()
        self._release()

    def _release(self) -> None:
        """Hand the Lease back at once (the next replica need not wait for it to expire): no
        holder, as client-go's ReleaseOnCancel does. The Lease itself stays; the Helm chart
        owns it, so that an uninstall deletes it even when its Role is gone before this runs."""
        if self._leader_until == 0.0:
            return
        lock = self._elector.election_config.lock
        try:
            lease = lock.api_instance.read_namespaced_lease(lock.name, lock.namespace)
            if lease.spec.holder_identity == lock.identity:
                # Replace, not patch: its resourceVersion makes it lose to a newer holder.
                lease.spec = client.V1LeaseSpec()
                lock.api_instance.replace_namespaced_lease(lock.name, lock.namespace, lease)
        except ApiException as error:
            log.warning("lease %s not released: %s", lock.name, error.reason)

    def wake(self) -> None:
        self._wake.set()

    def leading(self) -> bool:
        """True while this replica holds the Lease; renewed a few times per lease duration."""
        if time.monotonic() < self._leader_until:
            return True
        try:
            held = self._elector.try_acquire_or_renew()
        except ApiException as error:
            log.warning("lease %s: %s", self.settings.lease_name, error.reason)
            held = False
        if held:
            self._leader_until = time.monotonic() + self.settings.lease_duration_s / 3
        return bool(held)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            interval = self.settings.sweep_interval_s
            self._wake.wait(
                min(interval, POSITIONS_EVERY_S) if self._positions_behind else interval
            )
            self._wake.clear()
            if self._stopping.is_set():
                return
            started = time.monotonic()
            try:
                if self.leading():
                    self.round()
            except Exception:  # the loop must outlive a bad round (API server restarts, ...)
                log.exception("sweep round failed")
            self.last_round = time.monotonic()
            self._stopping.wait(max(0.0, MIN_ROUND_GAP_S - (self.last_round - started)))

    # --- one round -------------------------------------------------------------------------------------

    def round(self) -> None:
        moment = now()
        # A job queued by this round competes for the free slots as what it now is: admitting
        # only the ones queued before would let younger jobs overtake it.
        items = [
            (self.reconciler.accept(obj) or obj) if _phase(obj) is None else obj
            for obj in self.reconciler.list_jobs()
        ]
        queued = sorted((o for o in items if _phase(o) == Phase.queued.value), key=_created)
        unaccepted = sorted((o for o in items if _phase(o) is None), key=_created)
        running = [o for o in items if _phase(o) == Phase.running.value]
        # Repairs every sweep interval, not every round: they read the runner Jobs again.
        if time.monotonic() - self._last_repair >= self.settings.sweep_interval_s:
            self._last_repair = time.monotonic()
            self._repair(running, self.reconciler.list_children(running))
        free = max(0, self.settings.max_running - len(running))
        admitted = 0
        for obj in queued[:free]:
            if unaccepted and _created(unaccepted[0]) < _created(obj):
                break  # an older job is still being queued (by a handler): it goes first
            attempt = len((obj.get("status") or {}).get("attempts") or []) + 1
            transition = self.reconciler.apply(*_key(obj), Started(attempt=attempt), seen=obj)
            admitted += transition is not None and transition.changed
        waiting = queued[free:] if free else queued
        self._show_positions(waiting)
        for obj in items:
            self._finish(obj, moment)
        self.stats = QueueStats(
            queued=max(0, len(queued) - admitted),
            running=len(running) + admitted,
            capacity=0,
            workers=self.settings.max_running,
        )
        if time.monotonic() - self._last_orphans > ORPHAN_EVERY_S:
            self._last_orphans = time.monotonic()
            self.reconciler.storage.remove_orphans({_key(o) for o in items}, ORPHAN_GRACE_S)
        self.rounds += 1

    def _repair(self, running: list[Obj], children: list[Obj]) -> None:
        """Level-triggered: create the Job of a run that has none, report a finished Job the
        handlers missed (an operator restart, a dropped watch)."""
        existing = {_key(child) for child in children}
        for item in running:
            self.reconciler.ensure_child(item, existing)
        owners = {_key(obj): obj for obj in running}
        cutoff = time.time() - HANDLER_HEADSTART_S
        for child in children:
            meta = child["metadata"]
            owner = next(
                (r["name"] for r in meta.get("ownerReferences") or [] if r.get("kind") == KIND),
                None,
            )
            obj = owners.get((meta["namespace"], owner or ""))
            if obj is None or not job_finished(child) or _finished_at(child) > cutoff:
                continue
            attempts = (obj.get("status") or {}).get("attempts") or []
            current = attempts[-1] if attempts else {}
            label = (meta.get("labels") or {}).get(ATTEMPT_LABEL)
            if str(current.get("attempt")) == label and not current.get("outcome"):
                self.reconciler.observe_child(child)

    def _show_positions(self, waiting: list[Obj]) -> None:
        """Hand the places in the queue that changed to the positions thread: a pass is up to
        POSITIONS_SHOWN status writes, which must not hold admission up; at most one pass
        every POSITIONS_EVERY_S."""
        due = [
            (position, obj)
            for position, obj in enumerate(waiting[:POSITIONS_SHOWN], 1)
            if (obj.get("status") or {}).get("queuePosition") != position
        ]
        self._positions_behind = bool(due)
        with self._lock:
            if (
                not due
                or self._positions_busy
                or self._stopping.is_set()
                or time.monotonic() - self._positions_at < POSITIONS_EVERY_S
            ):
                return
            self._positions_busy = True
        self._positions.submit(self._write_positions, due)

    def _write_positions(self, due: list[tuple[int, Obj]]) -> None:
        try:
            for position, obj in due:
                try:
                    job = job_from_resource(obj)
                except ValidationError:
                    continue
                job.queue_position = position
                self.reconciler.write_status(obj, job, now())  # a conflict: a later pass
        except Exception:
            log.exception("queue positions not written")
        finally:
            with self._lock:
                self._positions_busy = False
                self._positions_at = time.monotonic()

    def _finish(self, obj: Obj, moment: datetime) -> None:
        """TTLs and webhooks of finished jobs."""
        status = obj.get("status") or {}
        if status.get("phase") not in (
            Phase.succeeded.value,
            Phase.failed.value,
            Phase.expired.value,
        ):
            return
        if status.get("phase") == Phase.expired.value or _due(status.get("expiresAt"), moment):
            self.reconciler.apply(*_key(obj), Tick())
            return
        if _due((status.get("webhook") or {}).get("nextAttemptAt"), moment):
            self._dispatch(obj)

    # --- webhooks -----------------------------------------------------------------------------------

    def _dispatch(self, obj: Obj) -> None:
        key = _key(obj)
        with self._lock:
            if key in self._delivering or self._stopping.is_set():
                return
            self._delivering.add(key)
        self._senders.submit(self._deliver, obj)

    def _deliver(self, obj: Obj) -> None:
        key = _key(obj)
        try:
            job = job_from_resource(obj)
            spec, _ = parse(obj)
            secret: str | None = None
            error: str | None = None
            if spec.webhook is not None and spec.webhook.secret_ref is not None:
                secret, error = self._secret(
                    key[0], spec.webhook.secret_ref.name, spec.webhook.secret_ref.key
                )
            if error is not None:
                response = WebhookResponse(attempt=job.webhook.attempts + 1, error=error)
            else:
                # The uid, not the name: a re-created ThumbnailJob of the same name is a new
                # event, and a receiver deduping on webhook-id must not drop it.
                message_id = f"msg_{obj['metadata']['uid']}"
                response = self._sender.deliver(job, message_id=message_id, secret=secret)
            self.reconciler.apply(*key, response)
        except Exception:
            log.exception("webhook of %s/%s failed", *key)
        finally:
            with self._lock:
                self._delivering.discard(key)

    def _secret(self, namespace: str, name: str, key: str) -> tuple[str | None, str | None]:
        """The signing key from the referenced Secret, or why it cannot be had."""
        try:
            secret = self._core.read_namespaced_secret(name, namespace)
        except ApiException as error:
            return None, f"Secret {namespace}/{name}: {error.reason}"
        value = (secret.data or {}).get(key)
        if value is None:
            return None, f"Secret {namespace}/{name} has no key {key!r}"
        return base64.b64decode(value).decode().strip(), None


def _finished_at(child: Obj) -> float:
    for condition in (child.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            text = condition.get("lastTransitionTime") or ""
            try:
                return datetime.fromisoformat(text).timestamp()
            except ValueError:
                return 0.0
    return 0.0
