"""The lifecycle of a thumbnail job as one pure state machine: no I/O, no clock, no randomness.

queued -> running -> done | failed -> expired. A main runner that runs out of memory is retried
with double the memory while the job's MemoryPlan allows, then once with the light fallback;
every other failure is final. Interruptions (eviction, preemption, a restart) re-run the job, a
few times at most. Each backend (local processes, Kubernetes Jobs) feeds events in and carries
out the actions that come back.

Safe under reconciliation: every run has an identity (its attempt number), and an event about
a run that is not the current one, a repeat of one already applied, or one that makes no sense
in the job's state is a no-op (the job unchanged, no actions), never an exception.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field
from smartthumb.operator.models import (
    FailureReason,
    Job,
    JobState,
    RunOutcome,
    RunRecord,
)
from smartthumb.runner.spec import RunResult

# --- events: what happened -------------------------------------------------------------------


class Started(BaseModel):
    """The queued job was admitted: a worker (or the admission queue) took it."""

    kind: Literal["started"] = "started"
    attempt: int | None = Field(
        None,
        description=(
            "The run it opens (RunRunner.attempt); None: the next one. A late or repeated start "
            "of a run already opened is then a no-op, not a second start of a re-queued job."
        ),
    )


class Rejected(BaseModel):
    """The queued job cannot run at all (its inputs are missing or refused)."""

    kind: Literal["rejected"] = "rejected"
    reason: FailureReason
    message: str


class RunnerExited(BaseModel):
    """A runner process of the job ended."""

    kind: Literal["runner_exited"] = "runner_exited"
    attempt: int = Field(description="The run it was (RunRunner.attempt).")
    outcome: RunOutcome
    result: RunResult | None = Field(None, description="The runner's RunResult when ok.")
    message: str | None = Field(None, description="The runner's one-line error or the cause.")


class Interrupted(BaseModel):
    """A run was stopped from outside (shutdown, restart, eviction, preemption, node loss)."""

    kind: Literal["interrupted"] = "interrupted"
    reason: str
    attempt: int | None = Field(None, description="The run interrupted; None: the current one.")
    replaced_by_backend: str | None = Field(
        None,
        description=(
            "Set when the backend already re-runs it in place (a Job replacing its disrupted "
            "pod): the name of what was disrupted, counted once however often it is reported."
        ),
    )


class WebhookResponse(BaseModel):
    """One webhook POST ended: an HTTP status, or an error before any answer."""

    kind: Literal["webhook_response"] = "webhook_response"
    attempt: int | None = Field(
        None, description="Which POST it was (1, 2, ...); a repeat of an answered one is a no-op."
    )
    status_code: int | None = None
    error: str | None = Field(None, description="Connection error, timeout, refused address.")
    retry_after_s: float | None = Field(None, description="The answer's Retry-After, in seconds.")
    permanent: bool = Field(False, description="Retrying cannot help (e.g. a refused address).")


class Tick(BaseModel):
    """Time passed: TTLs and webhook retries may be due."""

    kind: Literal["tick"] = "tick"


class Cancelled(BaseModel):
    """The client gave the job up: stop what runs and forget it now, as at its TTL."""

    kind: Literal["cancelled"] = "cancelled"


Event = Started | Rejected | RunnerExited | Interrupted | WebhookResponse | Tick | Cancelled

# --- actions: what the backend must do ------------------------------------------------------


class RunRunner(BaseModel):
    kind: Literal["run_runner"] = "run_runner"
    attempt: int = Field(1, ge=1, description="The run's identity; RunnerExited names it.")
    fallback: bool = Field(description="Run the light fallback composer (--fallback).")
    reason: str | None = Field(None, description="--fallback-reason: becomes worker_warning.")
    memory_mb: int | None = Field(None, description="Memory limit; None: the backend's own.")


class StopRunner(BaseModel):
    """The job gave up while a run of it may still be going (too many interruptions, or it
    was cancelled)."""

    kind: Literal["stop_runner"] = "stop_runner"
    attempt: int


class DeliverWebhook(BaseModel):
    kind: Literal["deliver_webhook"] = "deliver_webhook"
    at: datetime


class Expire(BaseModel):
    """Forget the job: it is past its TTL."""

    kind: Literal["expire"] = "expire"


class DeleteArtifacts(BaseModel):
    """Delete the job's uploaded inputs and its outputs."""

    kind: Literal["delete_artifacts"] = "delete_artifacts"


Action = RunRunner | StopRunner | DeliverWebhook | Expire | DeleteArtifacts


class LifecyclePolicy(BaseModel):
    """The numbers the state machine decides with."""

    ttl_s: float = Field(7200, ge=0, description="How long a finished job is kept.")
    max_interruptions: int = Field(
        3, ge=0, description="Interrupted runs re-run this often; one more fails the job."
    )
    webhook_max_attempts: int = Field(6, ge=1, description="POSTs before giving up.")
    webhook_backoff_s: float = Field(5, gt=0, description="Delay before the first retry.")
    webhook_backoff_factor: float = Field(4, ge=1, description="Each retry waits this much more.")
    webhook_backoff_max_s: float = Field(6 * 3600, gt=0, description="Longest delay.")
    webhook_jitter: float = Field(0.2, ge=0, lt=1, description="Delays vary by +-this fraction.")


class Transition(BaseModel):
    job: Job = Field(description="The job after the event.")
    actions: list[Action] = Field(default_factory=list)
    changed: bool = Field(
        True, description="False: the job is as it was (a stale or repeated event, a quiet tick)."
    )

    @property
    def state(self) -> JobState:
        return self.job.state


RETRY_AFTER_CODES = frozenset({429, 502, 503, 504})


def decide(job: Job, event: Event, now: datetime, policy: LifecyclePolicy) -> Transition:
    """The job after `event` at `now`, and what the backend must do about it."""
    before = job
    job = job.model_copy(deep=True)
    if isinstance(event, Started):
        transition = _start(job, event, now)
    elif isinstance(event, Rejected):
        transition = _reject(job, event, now, policy)
    elif isinstance(event, RunnerExited):
        transition = _runner_exited(job, event, now, policy)
    elif isinstance(event, Interrupted):
        transition = _interrupt(job, event, now, policy)
    elif isinstance(event, WebhookResponse):
        transition = _webhook_answered(job, event, now, policy)
    elif isinstance(event, Cancelled):
        transition = _cancel(job)
    else:
        transition = _tick(job, now)
    transition.changed = transition.job != before
    return transition


def _unchanged(job: Job) -> Transition:
    return Transition(job=job)


def current_run(job: Job) -> RunRecord | None:
    """The run in progress: the last one, while the job runs and it has not ended."""
    if job.state is not JobState.running or not job.runs or job.runs[-1].outcome is not None:
        return None
    return job.runs[-1]


def _next_attempt(job: Job) -> int:
    return len(job.runs) + 1


def _open_run(job: Job, fallback: bool, memory_mb: int | None, now: datetime) -> Transition:
    attempt = _next_attempt(job)
    job.runs.append(
        RunRecord(attempt=attempt, fallback=fallback, memory_mb=memory_mb, started_at=now)
    )
    action = RunRunner(
        attempt=attempt,
        fallback=fallback,
        reason=job.fallback_reason if fallback else None,
        memory_mb=memory_mb,
    )
    return Transition(job=job, actions=[action])


def _start(job: Job, event: Started, now: datetime) -> Transition:
    if job.state is not JobState.queued or event.attempt not in (None, _next_attempt(job)):
        return _unchanged(job)
    job.state = JobState.running
    job.started_at = job.started_at or now
    # A job re-queued after an interruption goes on where it was: same runner, same memory.
    fallback = job.fallback_reason is not None
    if job.runs:
        memory_mb = job.runs[-1].memory_mb
    elif job.memory is not None:
        memory_mb = job.memory.main_mb
    else:
        memory_mb = None
    return _open_run(job, fallback, memory_mb, now)


def _reject(job: Job, event: Rejected, now: datetime, policy: LifecyclePolicy) -> Transition:
    if job.state is not JobState.queued:
        return _unchanged(job)
    return _finish(job, JobState.failed, event.message, None, now, policy, event.reason)


def _close_run(run: RunRecord, outcome: RunOutcome, message: str | None, now: datetime) -> None:
    run.finished_at, run.outcome, run.message = now, outcome, message


def _retry_memory(job: Job, run: RunRecord) -> int | None:
    """The limit of the next main run after an OOM, or None when the ladder is at its top."""
    plan = job.memory
    if plan is None or run.memory_mb is None or run.memory_mb >= plan.max_mb:
        return None
    return min(run.memory_mb * 2, plan.max_mb)


def _runner_exited(
    job: Job, event: RunnerExited, now: datetime, policy: LifecyclePolicy
) -> Transition:
    run = current_run(job)
    if run is None or run.attempt != event.attempt:
        return _unchanged(job)
    if event.outcome is RunOutcome.interrupted:
        return _interrupt(
            job,
            Interrupted(reason=event.message or "interrupted", attempt=run.attempt),
            now,
            policy,
        )
    _close_run(run, event.outcome, event.message, now)
    detail = f" ({event.message})" if event.message else ""
    failure = FailureReason.runner_error
    match event.outcome:
        case RunOutcome.ok if event.result is not None:
            result = event.result
            if run.fallback:
                result = result.model_copy(
                    update={
                        "fallback_used": True,
                        "worker_warning": result.worker_warning or job.fallback_reason,
                    }
                )
            return _finish(job, JobState.done, None, result, now, policy)
        case RunOutcome.ok:
            error, failure = "the runner reported no result", FailureReason.no_result
        case RunOutcome.oom if not run.fallback:
            retry_mb = _retry_memory(job, run)
            if retry_mb is not None:
                return _open_run(job, False, retry_mb, now)
            job.fallback_reason = f"the main runner ran out of memory{detail}"
            fallback_mb = job.memory.fallback_mb if job.memory is not None else None
            return _open_run(job, True, fallback_mb, now)
        case RunOutcome.oom:
            error = f"out of memory: the main runner and the light fallback both ran out{detail}"
            failure = FailureReason.out_of_memory
        case RunOutcome.bad_input:
            error, failure = event.message or "the input is unusable", FailureReason.bad_input
        case RunOutcome.timeout:
            error, failure = f"timed out{detail}", FailureReason.deadline_exceeded
        case _:
            error = f"internal error in the runner{detail}"
    return _finish(job, JobState.failed, error, None, now, policy, failure)


def _interrupt(job: Job, event: Interrupted, now: datetime, policy: LifecyclePolicy) -> Transition:
    run = current_run(job)
    if run is None or event.attempt not in (None, run.attempt):
        return _unchanged(job)
    in_place = event.replaced_by_backend
    if in_place is not None:
        if in_place in run.disrupted:
            return _unchanged(job)
        run.disrupted.append(in_place)
    else:
        _close_run(run, RunOutcome.interrupted, event.reason, now)
    job.interruptions += 1
    if job.interruptions > policy.max_interruptions:
        if in_place is not None:
            _close_run(run, RunOutcome.interrupted, event.reason, now)
        error = f"interrupted {job.interruptions} times, the last time: {event.reason}"
        transition = _finish(
            job, JobState.failed, error, None, now, policy, FailureReason.interrupted
        )
        transition.actions.insert(0, StopRunner(attempt=run.attempt))
        return transition
    if in_place is None:
        job.state = JobState.queued
    return Transition(job=job)


def _finish(
    job: Job,
    state: JobState,
    error: str | None,
    result: RunResult | None,
    now: datetime,
    policy: LifecyclePolicy,
    failure: FailureReason | None = None,
) -> Transition:
    job.state, job.error, job.result, job.failure = state, error, result, failure
    job.finished_at = now
    job.expires_at = now + timedelta(seconds=policy.ttl_s)
    if not job.webhook.enabled:
        return Transition(job=job)
    job.webhook.next_attempt_at = now
    return Transition(job=job, actions=[DeliverWebhook(at=now)])


def _webhook_answered(
    job: Job, event: WebhookResponse, now: datetime, policy: LifecyclePolicy
) -> Transition:
    delivery = job.webhook
    if not (job.state.finished and delivery.enabled and delivery.next_attempt_at is not None):
        return _unchanged(job)
    if event.attempt is not None and event.attempt != delivery.attempts + 1:
        return _unchanged(job)
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


def _cancel(job: Job) -> Transition:
    run = current_run(job)
    stop = [StopRunner(attempt=run.attempt)] if run is not None else []
    if job.state is not JobState.expired:
        job.state = JobState.expired
        job.webhook.next_attempt_at = None  # a cancelled job is not announced
    return Transition(job=job, actions=[*stop, DeleteArtifacts(), Expire()])


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
