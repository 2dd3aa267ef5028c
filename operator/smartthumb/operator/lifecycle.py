"""The lifecycle of a thumbnail job as one pure state machine: no I/O, no clock, no randomness.

queued -> running -> done | failed -> expired. A main runner that runs out of memory is retried
once with the light fallback; every other failure is final. Each backend (local processes,
Kubernetes Jobs) feeds events in and carries out the actions that come back.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field
from smartthumb.operator.models import Job, JobState, RunOutcome, RunRecord
from smartthumb.runner.spec import RunResult

# --- events: what happened -------------------------------------------------------------------


class Started(BaseModel):
    """A worker took the queued job."""

    kind: Literal["started"] = "started"


class RunnerExited(BaseModel):
    """The runner process of the current run ended."""

    kind: Literal["runner_exited"] = "runner_exited"
    outcome: RunOutcome
    result: RunResult | None = Field(None, description="The runner's RunResult when ok.")
    message: str | None = Field(None, description="The runner's one-line error or the cause.")


class Interrupted(BaseModel):
    """The run was stopped by the backend (shutdown, restart): the job goes back to the queue."""

    kind: Literal["interrupted"] = "interrupted"
    reason: str


class WebhookResponse(BaseModel):
    """One webhook POST ended: an HTTP status, or an error before any answer."""

    kind: Literal["webhook_response"] = "webhook_response"
    status_code: int | None = None
    error: str | None = Field(None, description="Connection error, timeout, refused address.")
    retry_after_s: float | None = Field(None, description="The answer's Retry-After, in seconds.")
    permanent: bool = Field(False, description="Retrying cannot help (e.g. a refused address).")


class Tick(BaseModel):
    """Time passed: TTLs and webhook retries may be due."""

    kind: Literal["tick"] = "tick"


Event = Started | RunnerExited | Interrupted | WebhookResponse | Tick

# --- actions: what the backend must do ------------------------------------------------------


class RunRunner(BaseModel):
    kind: Literal["run_runner"] = "run_runner"
    fallback: bool = Field(description="Run the light fallback composer (--fallback).")
    reason: str | None = Field(None, description="--fallback-reason: becomes worker_warning.")


class DeliverWebhook(BaseModel):
    kind: Literal["deliver_webhook"] = "deliver_webhook"
    at: datetime


class Expire(BaseModel):
    """Forget the job: it is past its TTL."""

    kind: Literal["expire"] = "expire"


class DeleteArtifacts(BaseModel):
    """Delete the job's uploaded inputs and its outputs."""

    kind: Literal["delete_artifacts"] = "delete_artifacts"


Action = RunRunner | DeliverWebhook | Expire | DeleteArtifacts


class LifecyclePolicy(BaseModel):
    """The numbers the state machine decides with."""

    ttl_s: float = Field(7200, gt=0, description="How long a finished job is kept.")
    webhook_max_attempts: int = Field(6, ge=1, description="POSTs before giving up.")
    webhook_backoff_s: float = Field(5, gt=0, description="Delay before the first retry.")
    webhook_backoff_factor: float = Field(4, ge=1, description="Each retry waits this much more.")
    webhook_backoff_max_s: float = Field(6 * 3600, gt=0, description="Longest delay.")
    webhook_jitter: float = Field(0.2, ge=0, lt=1, description="Delays vary by +-this fraction.")


class Transition(BaseModel):
    job: Job = Field(description="The job after the event.")
    actions: list[Action] = Field(default_factory=list)

    @property
    def state(self) -> JobState:
        return self.job.state


class InvalidTransition(Exception):
    """The event cannot happen in the job's state: a backend bug, never a user error."""


RETRY_AFTER_CODES = frozenset({429, 502, 503, 504})


def decide(job: Job, event: Event, now: datetime, policy: LifecyclePolicy) -> Transition:
    """The job after `event` at `now`, and what the backend must do about it."""
    job = job.model_copy(deep=True)
    if isinstance(event, Started):
        return _start(job, now)
    if isinstance(event, RunnerExited):
        return _runner_exited(job, event, now, policy)
    if isinstance(event, Interrupted):
        return _interrupt(job, event.reason, now)
    if isinstance(event, WebhookResponse):
        return _webhook_answered(job, event, now, policy)
    return _tick(job, now)


def _require(job: Job, *states: JobState, event: str) -> None:
    if job.state not in states:
        raise InvalidTransition(f"job {job.id}: {event} while {job.state.value}")


def _start(job: Job, now: datetime) -> Transition:
    _require(job, JobState.queued, event="started")
    fallback = job.fallback_reason is not None
    job.state = JobState.running
    job.started_at = now
    job.runs.append(RunRecord(fallback=fallback, started_at=now))
    return Transition(job=job, actions=[RunRunner(fallback=fallback, reason=job.fallback_reason)])


def _close_run(job: Job, outcome: RunOutcome, message: str | None, now: datetime) -> bool:
    """Record how the current run ended; True when it was the fallback."""
    run = job.runs[-1]
    run.finished_at, run.outcome, run.message = now, outcome, message
    return run.fallback


def _runner_exited(
    job: Job, event: RunnerExited, now: datetime, policy: LifecyclePolicy
) -> Transition:
    _require(job, JobState.running, event="runner exited")
    if event.outcome is RunOutcome.interrupted:
        return _interrupt(job, event.message or "interrupted", now)
    was_fallback = _close_run(job, event.outcome, event.message, now)
    detail = f" ({event.message})" if event.message else ""
    match event.outcome:
        case RunOutcome.ok if event.result is not None:
            result = event.result
            if was_fallback:
                result = result.model_copy(
                    update={
                        "fallback_used": True,
                        "worker_warning": result.worker_warning or job.fallback_reason,
                    }
                )
            return _finish(job, JobState.done, None, result, now, policy)
        case RunOutcome.ok:
            return _finish(job, JobState.failed, "runner printed no result", None, now, policy)
        case RunOutcome.oom if not was_fallback:
            job.fallback_reason = f"the main runner ran out of memory{detail}"
            job.runs.append(RunRecord(fallback=True, started_at=now))
            return Transition(
                job=job, actions=[RunRunner(fallback=True, reason=job.fallback_reason)]
            )
        case RunOutcome.oom:
            error = f"out of memory: the main runner and the light fallback both ran out{detail}"
        case RunOutcome.bad_input:
            error = event.message or "the input is unusable"
        case RunOutcome.timeout:
            error = f"timed out{detail}"
        case _:
            error = f"internal error in the runner{detail}"
    return _finish(job, JobState.failed, error, None, now, policy)


def _finish(
    job: Job,
    state: JobState,
    error: str | None,
    result: RunResult | None,
    now: datetime,
    policy: LifecyclePolicy,
) -> Transition:
    job.state, job.error, job.result = state, error, result
    job.finished_at = now
    job.expires_at = now + timedelta(seconds=policy.ttl_s)
    if not job.webhook.enabled:
        return Transition(job=job)
    job.webhook.next_attempt_at = now
    return Transition(job=job, actions=[DeliverWebhook(at=now)])


def _interrupt(job: Job, reason: str, now: datetime) -> Transition:
    if job.state is JobState.queued:
        return Transition(job=job)
    _require(job, JobState.running, event="interrupted")
    _close_run(job, RunOutcome.interrupted, reason, now)
    job.state = JobState.queued
    return Transition(job=job)


def _webhook_answered(
    job: Job, event: WebhookResponse, now: datetime, policy: LifecyclePolicy
) -> Transition:
    delivery = job.webhook
    if not (job.state.finished and delivery.enabled and delivery.next_attempt_at is not None):
        raise InvalidTransition(f"job {job.id}: webhook answer with no delivery pending")
    delivery.attempts += 1
    delivery.last_status_code = event.status_code
    delivery.next_attempt_at = None
    code = event.status_code
    if code is not None and 200 <= code < 300:
        delivery.delivered, delivery.last_error = True, None
        return Transition(job=job)
    delivery.last_error = event.error or _describe_status(code)
    if code == 410 or event.permanent:
        return Transition(job=job)
    if delivery.attempts >= policy.webhook_max_attempts:
        delivery.last_error += f"; gave up after {delivery.attempts} attempts"
        return Transition(job=job)
    delay = retry_delay_s(job.id, delivery.attempts, policy)
    if code in RETRY_AFTER_CODES and event.retry_after_s is not None:
        delay = max(delay, min(event.retry_after_s, policy.webhook_backoff_max_s))
    delivery.next_attempt_at = now + timedelta(seconds=delay)
    return Transition(job=job, actions=[DeliverWebhook(at=delivery.next_attempt_at)])


def _describe_status(code: int | None) -> str:
    if code is None:
        return "no answer"
    if code == 410:
        return "HTTP 410 Gone: the receiver asked to stop"
    if 300 <= code < 400:
        return f"HTTP {code}: redirects are not followed, answer 2xx"
    return f"HTTP {code}"


def retry_delay_s(job_id: str, attempts: int, policy: LifecyclePolicy) -> float:
    """Exponential backoff after `attempts` failed POSTs, with a jitter that is random-looking
    but derived from the job id, so the decision stays pure and repeatable."""
    base = policy.webhook_backoff_s * policy.webhook_backoff_factor ** (attempts - 1)
    base = min(base, policy.webhook_backoff_max_s)
    digest = hashlib.sha256(f"{job_id}:{attempts}".encode()).digest()
    unit = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
    return base * (1 + policy.webhook_jitter * (2 * unit - 1))


def _tick(job: Job, now: datetime) -> Transition:
    # Files first, then the row: a backend that dies in between still has the row, and its
    # next Tick on the expired job repeats both (each is idempotent) instead of leaving files.
    if job.state is JobState.expired:
        return Transition(job=job, actions=[DeleteArtifacts(), Expire()])
    if job.state.finished and job.expires_at is not None and now >= job.expires_at:
        job.state = JobState.expired
        if job.webhook.next_attempt_at is not None:
            job.webhook.next_attempt_at = None
            job.webhook.last_error = "the job expired before the webhook was delivered"
        return Transition(job=job, actions=[DeleteArtifacts(), Expire()])
    due = job.webhook.next_attempt_at
    if job.state.finished and due is not None and now >= due:
        return Transition(job=job, actions=[DeliverWebhook(at=now)])
    return Transition(job=job)
