"""The jobs of a backend in memory: what status polls, queue positions and queue figures read,
so that no read costs a store query.

The index mirrors a durable copy kept elsewhere (the local engine's SQLite file, or the
engine's pushes to an API process); it is not thread-safe, its owner holds a lock around it.
A Job put here is the index's: it is stamped with a fresh revision and never changed after,
so a reader may keep what it made of a revision (the API's cached status documents).
"""

from __future__ import annotations

import bisect
import itertools
import time
from datetime import UTC, datetime

from smartthumb.operator.models import Job, JobState, QueueStats


class JobIndex:
    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._order: dict[str, int] = {}
        """Submission order: a job put back in the queue (after an interrupted run) goes
        back to its place."""
        self._queued: list[int] = []
        """The order keys of queued jobs, sorted: a position is one bisection."""
        self._running = 0
        self._batches: dict[str, list[str]] = {}
        self._orders = itertools.count()
        # Unique across restarts too (clients keep ETags): nanoseconds at start, then +1.
        self._revisions = itertools.count(time.time_ns())

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._jobs

    def put(self, job: Job) -> Job:
        """Add or replace the job (in submission order when new); returns it, stamped."""
        job.revision = next(self._revisions)
        old = self._jobs.get(job.id)
        order = self._order.get(job.id)
        if order is None:
            order = self._order[job.id] = next(self._orders)
            if job.batch_id is not None:
                self._batches.setdefault(job.batch_id, []).append(job.id)
        if old is not None:
            self._leave(old, order)
        self._jobs[job.id] = job
        if job.state is JobState.queued:
            bisect.insort(self._queued, order)
        elif job.state is JobState.running:
            self._running += 1
        return job

    def remove(self, job_id: str) -> None:
        job = self._jobs.pop(job_id, None)
        if job is None:
            return
        self._leave(job, self._order.pop(job_id))
        if job.batch_id is not None:
            batch = self._batches[job.batch_id]
            batch.remove(job_id)
            if not batch:
                del self._batches[job.batch_id]

    def _leave(self, job: Job, order: int) -> None:
        """Undo what `job` counted for in the queue figures."""
        if job.state is JobState.queued:
            del self._queued[bisect.bisect_left(self._queued, order)]
        elif job.state is JobState.running:
            self._running -= 1

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def shown(self, job: Job) -> Job | None:
        """What a reader gets of an indexed job: None once it has expired, a copy with its
        queue position while it is queued (the indexed one never changes)."""
        if job.state is JobState.expired:
            return None
        if job.expires_at is not None and job.expires_at <= datetime.now(UTC):
            return None  # the scheduler deletes it soon
        return self.positioned(job)

    def positioned(self, job: Job) -> Job:
        if job.state is not JobState.queued:
            return job
        return job.model_copy(update={"queue_position": self.queue_position(job.id)})

    def jobs(self) -> list[Job]:
        """Every job, in submission order."""
        return sorted(self._jobs.values(), key=lambda job: self._order[job.id])

    def batch(self, batch_id: str) -> list[Job]:
        """The batch's jobs, in submission order."""
        return [self._jobs[job_id] for job_id in self._batches.get(batch_id, ())]

    def shown_batch(self, batch_id: str) -> list[Job]:
        """What a reader gets of the batch's jobs (see shown), in submission order."""
        shown = (self.shown(job) for job in self.batch(batch_id))
        return [job for job in shown if job is not None]

    def stats(self, *, capacity: int, workers: int) -> QueueStats:
        return QueueStats(
            queued=self.queued, running=self.running, capacity=capacity, workers=workers
        )

    def queue_position(self, job_id: str) -> int | None:
        """1 for the next queued job to run; None when the job is not queued."""
        job = self._jobs.get(job_id)
        if job is None or job.state is not JobState.queued:
            return None
        return bisect.bisect_right(self._queued, self._order[job_id])

    @property
    def queued(self) -> int:
        return len(self._queued)

    @property
    def running(self) -> int:
        return self._running
