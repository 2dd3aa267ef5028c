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


class FailureReason(str, Enum):
    """Why a job failed, in one word (the Failed condition's reason on Kubernetes)."""

    out_of_memory = "OutOfMemory"
    bad_input = "BadInput"
    input_not_found = "InputNotFound"
    deadline_exceeded = "DeadlineExceeded"
    interrupted = "Interrupted"
    no_result = "NoResult"
    runner_error = "RunnerError"
    webhook_refused = "WebhookRefused"


class MemoryPlan(BaseModel):
    """The memory ladder of a job: a main run that runs out of memory is retried with double
    the memory while that stays within max_mb, then the light fallback runs with fallback_mb."""

    main_mb: int = Field(ge=1, description="Memory limit of the first main run, in MiB.")
    fallback_mb: int = Field(ge=1, description="Memory limit of the light fallback, in MiB.")
    max_mb: int = Field(ge=1, description="Largest limit a main run is retried with, in MiB.")


class RunRecord(BaseModel):
    """One runner process of a job: the main runner, and the light fallback after an OOM."""

    attempt: int = Field(1, ge=1, description="1, 2, ...: the run's identity within its job.")
    fallback: bool = Field(description="True for the light fallback composer.")
    memory_mb: int | None = Field(None, description="The run's memory limit, in MiB.")
    started_at: datetime
    finished_at: datetime | None = None
    outcome: RunOutcome | None = Field(None, description="None while the process runs.")
    message: str | None = Field(None, description="The runner's one-line error, if any.")
    disrupted: list[str] = Field(
        default_factory=list,
        description="Pods of this run that were disrupted and replaced in place (Kubernetes).",
    )


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
    failure: FailureReason | None = Field(None, description="Why the job failed, in one word.")
    result: RunResult | None = None
    fallback_reason: str | None = Field(
        None, description="Set when the main runner ran out of memory and the fallback runs."
    )
    runs: list[RunRecord] = Field(default_factory=list, description="Runner processes so far.")
    memory: MemoryPlan | None = Field(
        None, description="The memory ladder; None: the backend's fixed limits, no retries."
    )
    interruptions: int = Field(
        0, description="Runs stopped by eviction, preemption, node loss or a restart."
    )
    webhook: WebhookDelivery = Field(default_factory=WebhookDelivery)
    api_url: str | None = Field(
        None,
        description=(
            "The API address the job was submitted to: the base of the links in its webhook "
            "(None: the sender's public URL setting)."
        ),
    )
    queue_position: int | None = Field(
        None, description="1 = next to run; only while queued (computed, not stored)."
    )
    revision: int | None = Field(
        None,
        exclude=True,
        description=(
            "Changes whenever the job does (computed, not stored, never serialised): what "
            "the API keys its cached documents and ETags on. None: unknown."
        ),
    )


class QueueStats(BaseModel):
    """How busy a backend is."""

    queued: int
    running: int
    capacity: int = Field(description="Most queued jobs accepted before QueueFullError.")
    workers: int = Field(description="Jobs that run at the same time.")
