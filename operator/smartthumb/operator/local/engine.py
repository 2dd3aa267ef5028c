"""The local engine: queued jobs run in runner processes under memory limits, their state in
SQLite (and in memory, where every read is served from), webhooks and TTLs handled by a
scheduler thread. Every decision comes from
smartthumb.operator.lifecycle.decide; this module only carries the actions out."""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from smartthumb.operator.backend import (
    BackendStartError,
    InputError,
    InputFile,
    QueueFullError,
    UnknownJobError,
    check_webhook,
)
from smartthumb.operator.jobindex import JobIndex
from smartthumb.operator.lifecycle import (
    Action,
    Cancelled,
    DeleteArtifacts,
    DeliverWebhook,
    Event,
    Expire,
    Interrupted,
    RunnerExited,
    RunRunner,
    Started,
    StopRunner,
    Tick,
    Transition,
    current_run,
    decide,
)
from smartthumb.operator.local.process import ForkServer, RunnerProcess, runner_argv
from smartthumb.operator.local.settings import EngineSettings
from smartthumb.operator.local.store import JobStore
from smartthumb.operator.metrics import METRICS, Metrics
from smartthumb.operator.models import (
    Job,
    JobState,
    QueueStats,
    RunOutcome,
    WebhookDelivery,
)
from smartthumb.operator.waiters import Waiters
from smartthumb.operator.webhooks import WebhookSender
from smartthumb.runner.limits import is_url
from smartthumb.runner.spec import ThumbnailSpec
from smartthumb.runner.subjects import YOLO_ENV

log = logging.getLogger(__name__)

WEBHOOK_SENDERS = 4
"""Concurrent webhook POSTs: a slow receiver must not hold up the others."""
YOLO_MIN_MEMORY_MB = 4096
"""The optional YOLO detector (torch) maps about 3.5 GB of address space by itself."""
SCHEDULER_ERROR_PAUSE_S = 1.0
"""After a failed sweep: the next one may fail the same way, and must not spin."""
RUNNER_WAIT_POLL_S = 0.5
"""A worker waiting for the fork server's restart looks this often whether the engine stops."""
STOP_JOIN_S = 10.0
"""How long stop() waits for its threads once every run is killed: a stuck one must not hang
the shutdown (they are daemon threads)."""


class EngineConfigError(ValueError):
    """The settings cannot work together: start() refuses them."""


_SAFE_SUFFIX = re.compile(r"\.[a-z0-9]{1,5}")


def _now() -> datetime:
    return datetime.now(UTC)


def _stored_name(index: int, name: str) -> str:
    """Server-chosen file names: the client's name only lends a harmless extension."""
    suffix = Path(name).suffix.lower()
    stem = f"input-{index:03d}"
    return f"{stem}{suffix}" if _SAFE_SUFFIX.fullmatch(suffix) else stem


def _with_client_names(event: RunnerExited, inputs: list[str], names: list[str]) -> RunnerExited:
    """The runner names the files it read (server-chosen, e.g. input-003.jpg); the client knows
    them by the names it sent, so its error messages use those."""
    if not event.message:
        return event
    message = event.message
    for given, name in zip(inputs, names, strict=False):
        if is_url(given):
            continue  # the runner names a URL as the client does (without its query)
        stored = Path(given).name
        message = re.sub(rf"(?<![\w.]){re.escape(stored)}(?![\w.])", name, message)
    return event.model_copy(update={"message": message})


def output_path(jobs_dir: Path, job: Job) -> Path:
    """Where the runner writes a job's thumbnail."""
    return jobs_dir / job.id / f"thumbnail.{job.spec.format.extension}"


def finished_output(jobs_dir: Path, job: Job) -> Path | None:
    """The thumbnail of a done job already in hand, while it is on disk (no store read)."""
    if job.state is not JobState.done:
        return None
    path = output_path(jobs_dir, job)
    return path if path.is_file() else None


class DataDirInUse(BackendStartError):
    """Another engine (another process) holds the data directory."""


def _lock_data_dir(data_dir: Path) -> IO[str]:
    """An exclusive lock on `data_dir` for this engine's lifetime: a second engine would
    re-queue the first one's running jobs and delete its half-written inputs."""
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = open(data_dir / "lock", "a+")  # noqa: SIM115 - held until stop()
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "another process"
        lock.close()
        raise DataDirInUse(
            f"the data directory {data_dir} (SMARTTHUMB_DATA_DIR) is in use by {holder}: "
            "one smartthumb process per data directory"
        ) from None
    lock.truncate(0)
    lock.write(f"pid {os.getpid()}\n")
    lock.flush()
    return lock


class LocalEngine:
    submits_locally = True  # the job's folder, a SQLite row, the queue

    def __init__(self, settings: EngineSettings, metrics: Metrics = METRICS) -> None:
        self.settings = settings
        self.ttl_s = settings.ttl_s
        self._policy = settings.policy()
        self._metrics = metrics
        self._data_lock = _lock_data_dir(settings.data_dir)  # before anything is touched
        self._jobs_dir = settings.data_dir / "jobs"
        self._jobs_dir.mkdir(parents=True, exist_ok=True)
        self._store = JobStore(settings.data_dir / "smartthumb.sqlite3")
        # What the store holds, in memory: reads (status, queue positions, counts) are served
        # from it; every write goes to the store first, then here, both under self._lock.
        self._index = JobIndex()
        for job in self._store.jobs():
            self._index.put(job)
        self._remove_orphan_dirs()
        self._webhooks = WebhookSender.from_settings(settings, settings.public_url)
        # One lock around every read-decide-write of a job. wait() sleeps on a condition of its
        # job's own, so a change wakes only that job's waiters (not every long-poll).
        self._lock = threading.RLock()
        self._waiters = Waiters(self._lock)
        self._followers: list[Callable[[str, Job | None], None]] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._processes: dict[str, RunnerProcess] = {}
        self._interrupted: set[str] = set()
        self._delivering: set[str] = set()
        self._started = False
        self._aborting = False
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._forkserver = ForkServer(settings.worker_max_runs, settings.runner_start_timeout_s)
        self._senders = ThreadPoolExecutor(WEBHOOK_SENDERS, thread_name_prefix="smartthumb-webhook")
        metrics.watch(self.stats)

    # --- public interface ---------------------------------------------------------------------

    def start(self) -> None:
        """Recover from the store (interrupted runs are re-run), start workers and scheduler.
        Raises EngineConfigError on settings that would fail every job."""
        if os.environ.get(YOLO_ENV) and self.settings.memory_limit_mb < YOLO_MIN_MEMORY_MB:
            raise EngineConfigError(
                f"{YOLO_ENV} is set, and the YOLO detector alone maps about 3.5 GB of address "
                f"space: with memory_limit_mb (SMARTTHUMB_MEMORY_LIMIT_MB) at "
                f"{self.settings.memory_limit_mb} every job would run out of memory. Set "
                f"SMARTTHUMB_MEMORY_LIMIT_MB to at least {YOLO_MIN_MEMORY_MB} or unset {YOLO_ENV}."
            )
        self._forkserver.start()
        for job in self._index.jobs():
            if job.state is JobState.running:
                self._apply(job.id, Interrupted(reason="the engine restarted while the job ran"))
        with self._lock:
            for job in self._index.jobs():
                if job.state is JobState.queued:
                    self._queue.put(job.id)
            self._started = True
        for index in range(self.settings.workers):
            self._spawn(self._work, f"smartthumb-worker-{index}")
        self._spawn(self._schedule, "smartthumb-scheduler")

    def unready_reason(self) -> str | None:
        try:
            self._store.ping()
        except Exception as error:  # noqa: BLE001 - any failure means "not ready", with the reason
            return f"store unavailable: {type(error).__name__}"
        if not self.healthy():
            return "the runner fork server or an engine thread is down"
        return None

    def healthy(self) -> bool:
        """True while the engine can run jobs: started, not stopping, its threads alive and
        the runner fork server up (a dead one restarts by itself)."""
        return (
            self._started
            and not self._stopping.is_set()
            and all(thread.is_alive() for thread in self._threads)
            and self._forkserver.alive
        )

    def stop(self, graceful: bool = True, timeout: float = 30) -> None:
        """Let running jobs finish for up to `timeout` seconds (0 when not graceful), then kill
        what still runs and put it back in the queue, where the next start() finds it."""
        self._stopping.set()
        workers = [
            thread for thread in self._threads if thread.name.startswith("smartthumb-worker")
        ]
        for _ in workers:
            self._queue.put(None)
        deadline = time.monotonic() + (timeout if graceful else 0)
        for thread in workers:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._aborting = True
            self._interrupted.update(self._processes)
        self._forkserver.close()  # kills what still runs, and a restart in progress
        self._wake.set()
        joined_by = time.monotonic() + STOP_JOIN_S
        for thread in self._threads:
            thread.join(max(0.0, joined_by - time.monotonic()))
            if thread.is_alive():
                log.warning("%s still runs %g s after stop()", thread.name, STOP_JOIN_S)
        self._senders.shutdown(wait=True, cancel_futures=True)
        self._webhooks.close()
        self._store.close()
        self._data_lock.close()  # the next engine on this directory may start

    def submit(
        self,
        spec: ThumbnailSpec,
        inputs: Sequence[InputFile],
        *,
        webhook_url: str | None = None,
        batch_id: str | None = None,
        api_url: str | None = None,
    ) -> Job:
        """Queue a job. Raises InputError, WebhookRefusedError or QueueFullError."""
        check_webhook(webhook_url, self.settings.allow_private_webhooks)
        job, inputs = self._prepare(spec, inputs, webhook_url, batch_id)
        return self._enqueue([(job.model_copy(update={"api_url": api_url}), inputs)])[0]

    def submit_batch(
        self, spec: ThumbnailSpec, inputs: Sequence[InputFile], batch_id: str
    ) -> list[Job]:
        """One job per input sharing `batch_id`: all queued, or none (QueueFullError) — a
        client never gets a 429 for a batch part of which runs anyway."""
        return self._enqueue([self._prepare(spec, [one], None, batch_id) for one in inputs])

    def _prepare(
        self,
        spec: ThumbnailSpec,
        inputs: Sequence[InputFile],
        webhook_url: str | None,
        batch_id: str | None,
    ) -> tuple[Job, Sequence[InputFile]]:
        if not inputs:
            raise InputError("at least one input image is needed")
        job = Job(
            id=secrets.token_hex(16),
            batch_id=batch_id,
            spec=spec,
            input_names=[item.name for item in inputs],
            created_at=_now(),
            webhook=WebhookDelivery(enabled=webhook_url is not None, url=webhook_url),
            memory=self.settings.memory_plan(),
        )
        return job, inputs

    def _enqueue(self, prepared: list[tuple[Job, Sequence[InputFile]]]) -> list[Job]:
        """Check the room for all of them, write their inputs, insert them as one step."""
        self._check_capacity(len(prepared))
        ready = [(job, self._write_inputs(job.id, inputs)) for job, inputs in prepared]
        with self._lock:
            try:
                self._check_capacity(len(ready))
            except QueueFullError:
                for job, _ in ready:
                    shutil.rmtree(self._job_dir(job.id), ignore_errors=True)
                raise
            self._store.insert_all(ready)
            for job, _ in ready:
                self._index.put(job)
                self._changed(job.id)
                if self._started:
                    self._queue.put(job.id)
            return [self._index.positioned(job) for job, _ in ready]

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            job = self._index.get(job_id)
            return None if job is None else self._index.shown(job)

    def list_batch(self, batch_id: str) -> list[Job]:
        with self._lock:
            return self._index.shown_batch(batch_id)

    def output_path(self, job_id: str) -> Path | None:
        job = self.get(job_id)
        return None if job is None else self.output_file(job)

    def output_file(self, job: Job) -> Path | None:
        return finished_output(self._jobs_dir, job)

    def output_url(self, job: Job) -> str | None:
        return None  # the API serves the file

    def stats(self) -> QueueStats:
        with self._lock:
            return self._index.stats(
                capacity=self.settings.queue_capacity, workers=self.settings.workers
            )

    def cancel(self, job_id: str) -> None:
        """Stop the job if it runs; delete it and its files. Raises UnknownJobError."""
        if self.get(job_id) is None:
            raise UnknownJobError(job_id)
        self._apply(job_id, Cancelled())

    def wait(self, job_id: str, timeout: float) -> Job:
        """The job once done or failed. Raises UnknownJobError, or TimeoutError after `timeout`."""
        return self._waiters.wait(job_id, lambda: self.get(job_id), timeout)

    def subscribe(self, job_id: str, changed: Callable[[], None]) -> Callable[[], None]:
        return self._waiters.subscribe(job_id, changed)

    def follow(
        self, changed: Callable[[str, Job | None], None], now: Callable[[list[Job]], object]
    ) -> None:
        """`now(every job, in submission order)`, then `changed(id, job)` after each change
        of any job (None: deleted), all with the engine's lock held: they must only hand the
        news on. What the API processes' copies are kept current by (shared.py)."""
        with self._lock:
            now(self._index.jobs())
            self._followers.append(changed)

    def unfollow(self, changed: Callable[[str, Job | None], None]) -> None:
        with self._lock:
            if changed in self._followers:
                self._followers.remove(changed)

    def _changed(self, job_id: str) -> None:
        """After a change of the job's indexed copy; the lock held."""
        self._waiters.notify(job_id)
        job = self._index.get(job_id)
        for changed in self._followers:
            changed(job_id, job)

    # --- files ----------------------------------------------------------------------------------

    def _job_dir(self, job_id: str) -> Path:
        return self._jobs_dir / job_id

    def _output(self, job: Job) -> Path:
        return output_path(self._jobs_dir, job)

    def _write_inputs(self, job_id: str, inputs: Sequence[InputFile]) -> list[str]:
        """What the runner reads: the bytes written to the job's folder, URLs as they are.
        In the folder itself, not a subfolder: ext4 allocating one more inode per job was
        ~5 % of the API process's CPU."""
        directory = self._job_dir(job_id)
        directory.mkdir()
        given = []
        for index, item in enumerate(inputs):
            if item.url is not None:
                given.append(item.url)
            else:
                path = directory / _stored_name(index, item.name)
                path.write_bytes(item.data or b"")
                given.append(str(path.absolute()))
        return given

    def _remove_orphan_dirs(self) -> None:
        """Inputs are written before the row is inserted: a crash between leaves a directory
        no job owns. Run before any submit() of this engine, so none is half-written."""
        known = self._index
        for entry in self._jobs_dir.iterdir():
            if entry.is_dir() and entry.name not in known:
                log.warning("removing %s: no job owns it", entry)
                shutil.rmtree(entry, ignore_errors=True)

    def _check_capacity(self, adding: int = 1) -> None:
        queued = self._index.queued
        if queued + adding > self.settings.queue_capacity:
            raise QueueFullError(
                f"the queue is full ({queued} of {self.settings.queue_capacity} places taken, "
                f"{adding} asked for): retry later"
            )

    # --- carrying out the lifecycle ---------------------------------------------------------------

    def _spawn(self, target: Callable[[], object], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _apply(self, job_id: str, event: Event) -> Transition | None:
        """Decide and persist; None when the job is gone (expired meanwhile)."""
        with self._lock:
            job = self._index.get(job_id)
            if job is None:
                return None
            transition = decide(job, event, _now(), self._policy)
            self._store.save(transition.job)
            self._index.put(transition.job)
            self._changed(job_id)
        self._metrics.observe(job, event, transition)
        self._carry_out(job_id, transition.actions)
        return transition

    def _carry_out(self, job_id: str, actions: list[Action]) -> None:
        """Every action but RunRunner, which the worker that applied the event runs itself."""
        for action in actions:
            if isinstance(action, StopRunner):
                with self._lock:
                    process = self._processes.get(job_id)
                if process is not None:
                    process.kill()  # its worker then finds the job gone and moves on
            elif isinstance(action, DeliverWebhook):
                if action.at <= _now():
                    self._dispatch_webhook(job_id)
                else:
                    self._wake.set()  # the scheduler recomputes its next wake-up
            elif isinstance(action, Expire):
                with self._lock:
                    self._store.delete(job_id)
                    self._index.remove(job_id)
                    self._changed(job_id)
            elif isinstance(action, DeleteArtifacts):
                shutil.rmtree(self._job_dir(job_id), ignore_errors=True)

    def _work(self) -> None:
        while True:
            job_id = self._queue.get()
            if job_id is None or self._stopping.is_set() or not self._runner_up():
                return  # a job taken stays queued in the store, for the next start()
            try:
                self._run_job(job_id)
            except Exception as error:  # one job must not end the worker
                log.exception("job %s: the engine failed while running it", job_id)
                self._fail(job_id, error)

    def _runner_up(self) -> bool:
        """Wait, holding no lock, while the fork server restarts; False once the engine stops."""
        while not self._forkserver.wait_running(RUNNER_WAIT_POLL_S):
            if self._stopping.is_set():
                return False
        return True

    def _run_job(self, job_id: str) -> None:
        transition = self._apply(job_id, Started())
        while transition is not None:
            run = next((a for a in transition.actions if isinstance(a, RunRunner)), None)
            if run is None:
                break
            transition = self._apply(job_id, self._run(transition.job, run))
        requeued = transition is not None and transition.state is JobState.queued
        if requeued and not self._stopping.is_set():  # stopping: the next start() finds it
            self._queue.put(job_id)  # its run was lost with the fork server: it runs again

    def _fail(self, job_id: str, error: Exception) -> None:
        """Fail a job the engine broke down on while it ran (a queued one stays queued)."""
        try:
            job = self._index.get(job_id)
            run = None if job is None else current_run(job)
            if run is not None:
                message = f"the engine failed: {type(error).__name__}: {error}"
                exited = RunnerExited(
                    attempt=run.attempt, outcome=RunOutcome.internal, message=message
                )
                self._apply(job_id, exited)
        except Exception:  # the store itself may be what failed
            log.exception("job %s: could not record the engine's failure", job_id)

    def _run(self, job: Job, run: RunRunner) -> RunnerExited | Interrupted:
        settings = self.settings
        inputs = self._store.inputs(job.id)
        argv = runner_argv(job.spec, inputs, self._output(job), run)
        log_stem = self._job_dir(job.id) / ("fallback" if run.fallback else "main")
        limit = run.memory_mb or (
            settings.fallback_memory_limit_mb if run.fallback else settings.memory_limit_mb
        )
        with self._lock:
            if self._aborting:
                return Interrupted(reason="the engine stopped before the job ran")
            process = self._forkserver.run(argv, log_stem, limit)
            self._processes[job.id] = process
        finished = process.wait(settings.job_timeout_s)
        with self._lock:
            del self._processes[job.id]
            if job.id in self._interrupted:
                self._interrupted.discard(job.id)
                return Interrupted(reason="the engine stopped while the job ran")
        if not finished:
            process.kill()
            return RunnerExited(
                attempt=run.attempt,
                outcome=RunOutcome.timeout,
                message=f"the runner did not finish within {settings.job_timeout_s:g} s",
            )
        return _with_client_names(process.outcome(run.attempt), inputs, job.input_names)

    def _schedule(self) -> None:
        """Apply Tick to jobs whose TTL or webhook retry is due; sleep until the next one."""
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                pause = self._sweep()
            except Exception:  # the scheduler must outlive a bad sweep
                log.exception("the scheduler's sweep failed")
                pause = SCHEDULER_ERROR_PAUSE_S
            self._wake.wait(pause)

    def _sweep(self) -> float:
        """One round of the scheduler; the seconds until the next one."""
        with self._lock:
            delivering = set(self._delivering)
        failed = False
        for job_id in self._store.due(_now(), exclude=delivering):
            try:
                self._apply(job_id, Tick())
            except Exception:  # one bad job must not hold up the rest
                log.exception("job %s: tick failed", job_id)
                failed = True
        with self._lock:
            next_due = self._store.next_due(exclude=self._delivering)
        pause = self.settings.sweep_interval_s
        if next_due is not None:
            pause = min(pause, max(0.0, next_due - time.time()))
        return max(pause, SCHEDULER_ERROR_PAUSE_S) if failed else pause

    def _dispatch_webhook(self, job_id: str) -> None:
        with self._lock:
            if job_id in self._delivering or self._stopping.is_set():
                return
            self._delivering.add(job_id)
        self._senders.submit(self._deliver, job_id)

    def _deliver(self, job_id: str) -> None:
        try:
            job = self._index.get(job_id)
            if job is not None and job.webhook.next_attempt_at is not None:
                self._apply(job_id, self._webhooks.deliver(job))
        except Exception:
            log.exception("webhook delivery of job %s failed", job_id)
        finally:
            with self._lock:
                self._delivering.discard(job_id)
            self._wake.set()
