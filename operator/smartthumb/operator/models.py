"""What a thumbnail job is, as every backend stores it and the API shows it."""

from __future__ import annotations

from datetime import datetime
from enum import Enum

from pydantic import BaseModel, Field
from smartthumb.runner.spec import RunResult, ThumbnailSpec


class JobState(str, Enum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"
    expired = "expired"

    @property
    def finished(self) -> bool:
        """done or failed: the runner will not run again, the webhook is due."""
        return self in (JobState.done, JobState.failed)


class RunOutcome(str, Enum):
    """How one runner process ended, as read from its exit status."""

    ok = "ok"
    bad_input = "bad_input"
    oom = "oom"
    internal = "internal"
    timeout = "timeout"
    interrupted = "interrupted"


class RunRecord(BaseModel):
    """One runner process of a job: the main runner, and the light fallback after an OOM."""

    fallback: bool = Field(description="True for the light fallback composer.")
    started_at: datetime
    finished_at: datetime | None = None
    outcome: RunOutcome | None = Field(None, description="None while the process runs.")
    message: str | None = Field(None, description="The runner's one-line error, if any.")


class WebhookDelivery(BaseModel):
    """The completion webhook of a job and where its delivery stands."""

    enabled: bool = False
    url: str | None = None
    attempts: int = Field(0, description="POSTs made so far.")
    delivered: bool = Field(False, description="A 2xx answer was received.")
    last_status_code: int | None = None
    last_error: str | None = None
    next_attempt_at: datetime | None = Field(
        None, description="When the next POST is due; None when delivered or given up."
    )


class Job(BaseModel):
    """One thumbnail request: its spec, where it stands, and its result."""

    id: str
    batch_id: str | None = Field(None, description="Jobs submitted together share a batch.")
    state: JobState = JobState.queued
    spec: ThumbnailSpec
    input_names: list[str] = Field(description="The inputs' original file names, in order.")
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    expires_at: datetime | None = Field(
        None, description="When the job and its files are deleted (set when it finishes)."
    )
    error: str | None = Field(None, description="Why the job failed, in one line.")
    result: RunResult | None = None
    fallback_reason: str | None = Field(
        None, description="Set when the main runner ran out of memory and the fallback runs."
    )
    runs: list[RunRecord] = Field(default_factory=list, description="Runner processes so far.")
    webhook: WebhookDelivery = Field(default_factory=WebhookDelivery)
    queue_position: int | None = Field(
        None, description="1 = next to run; only while queued (computed, not stored)."
    )


class QueueStats(BaseModel):
    """How busy a backend is."""

    queued: int
    running: int
    capacity: int = Field(description="Most queued jobs accepted before QueueFullError.")
    workers: int = Field(description="Jobs that run at the same time.")
