"""A ThumbnailJob resource and the lifecycle's Job, both ways; the conditions and Events that
tell a job's story. Pure functions: the resource's status holds everything the state machine
needs, so any replica (or a restarted operator) can pick a job up from the API alone."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from smartthumb.operator.kube.childjob import child_job_name
from smartthumb.operator.kube.resource import (
    Attempt,
    Condition,
    ConditionStatus,
    Phase,
    Result,
    Runner,
    ThumbnailJobSpec,
    ThumbnailJobStatus,
    WebhookStatus,
    mib_quantity,
    quantity_mib,
)
from smartthumb.operator.kube.storage import default_output
from smartthumb.operator.models import (
    FailureReason,
    Job,
    JobState,
    MemoryPlan,
    RunOutcome,
    RunRecord,
    WebhookDelivery,
)
from smartthumb.runner.spec import OutputReport, RunResult

Obj = dict[str, Any]
BATCH_LABEL = "smartthumb.dev/batch"
API_URL = "smartthumb.dev/api-url"
"""Annotation: the API address a ThumbnailJob was submitted to (the webhook's links)."""

PHASES = {
    JobState.queued: Phase.queued,
    JobState.running: Phase.running,
    JobState.done: Phase.succeeded,
    JobState.failed: Phase.failed,
    JobState.expired: Phase.expired,
}
STATES = {phase: state for state, phase in PHASES.items()}
OUTCOMES = {
    RunOutcome.ok: "Succeeded",
    RunOutcome.oom: "OOMKilled",
    RunOutcome.bad_input: "BadInput",
    RunOutcome.timeout: "DeadlineExceeded",
    RunOutcome.interrupted: "Interrupted",
    RunOutcome.internal: "Error",
}
RUN_OUTCOMES = {word: outcome for outcome, word in OUTCOMES.items()}


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def parse(obj: Obj) -> tuple[ThumbnailJobSpec, ThumbnailJobStatus]:
    return (
        ThumbnailJobSpec.model_validate(obj["spec"]),
        ThumbnailJobStatus.model_validate(obj.get("status") or {}),
    )


def output_of(obj: Obj, spec: ThumbnailJobSpec) -> str:
    """Where the thumbnail goes, relative to the shared volume."""
    meta = obj["metadata"]
    return default_output(meta["namespace"], meta["name"], spec.output, spec.format.extension)


def job_from_resource(obj: Obj) -> Job:
    """The lifecycle's view of a ThumbnailJob."""
    spec, status = parse(obj)
    meta = obj["metadata"]
    resources = spec.resources
    delivery = status.webhook or WebhookStatus()
    return Job(
        id=meta["name"],
        batch_id=(meta.get("labels") or {}).get(BATCH_LABEL),
        state=STATES[status.phase],
        spec=spec.thumbnail_spec(),
        input_names=[source.shown() for source in spec.sources],
        created_at=_time(meta["creationTimestamp"]),
        started_at=status.started_at,
        finished_at=status.finished_at,
        expires_at=status.expires_at,
        error=status.message,
        failure=FailureReason(status.failure_reason) if status.failure_reason else None,
        result=_run_result(status.result) if status.result else None,
        fallback_reason=status.fallback_reason,
        runs=[_run_record(attempt) for attempt in status.attempts],
        webhook=WebhookDelivery(
            enabled=spec.webhook is not None,
            url=spec.webhook.url if spec.webhook else None,
            **delivery.model_dump(),
        ),
        memory=MemoryPlan(
            main_mb=quantity_mib(resources.memory),
            fallback_mb=quantity_mib(resources.fallback_memory),
            max_mb=resources.max_memory_mib(),
        ),
        interruptions=status.interruptions,
        api_url=(meta.get("annotations") or {}).get(API_URL),
        queue_position=status.queue_position,
    )


def _run_result(result: Result) -> RunResult:
    return RunResult(
        mode=result.mode,
        method=result.method,
        fallback_used=result.fallback_used,
        worker_warning=result.worker_warning,
        selected=result.selected,
        output=OutputReport(
            format=result.format, width=result.width, height=result.height, bytes=result.bytes
        ),
        inputs=result.inputs,
    )


def _run_record(attempt: Attempt) -> RunRecord:
    return RunRecord(
        attempt=attempt.attempt,
        fallback=attempt.runner is Runner.fallback,
        memory_mb=quantity_mib(attempt.memory) if attempt.memory else None,
        started_at=attempt.started_at,
        finished_at=attempt.finished_at,
        outcome=RUN_OUTCOMES[attempt.outcome] if attempt.outcome else None,
        message=attempt.message,
        disrupted=attempt.disrupted_pods,
    )


def _attempt(name: str, run: RunRecord) -> Attempt:
    return Attempt(
        attempt=run.attempt,
        job_name=child_job_name(name, run.attempt),
        runner=Runner.fallback if run.fallback else Runner.main,
        memory=mib_quantity(run.memory_mb) if run.memory_mb else None,
        started_at=run.started_at,
        finished_at=run.finished_at,
        outcome=OUTCOMES[run.outcome] if run.outcome else None,
        message=run.message,
        disrupted_pods=run.disrupted,
    )


def status_from_job(job: Job, obj: Obj, now: datetime) -> Obj:
    """The status subresource for `job`, keeping each unchanged condition's transition time."""
    spec, previous = parse(obj)
    generation = obj["metadata"].get("generation")
    result = None
    if job.result is not None:
        report = job.result
        result = Result(
            output=output_of(obj, spec),
            format=report.output.format,
            width=report.output.width,
            height=report.output.height,
            bytes=report.output.bytes,
            mode=report.mode,
            method=report.method,
            selected=report.selected,
            fallback_used=report.fallback_used,
            worker_warning=report.worker_warning,
            inputs=report.inputs,
        )
    delivery = job.webhook
    status = ThumbnailJobStatus(
        phase=PHASES[job.state],
        conditions=merge_conditions(previous.conditions, desired_conditions(job), now, generation),
        observed_generation=generation,
        queue_position=job.queue_position if job.state is JobState.queued else None,
        attempts=[_attempt(job.id, run) for run in job.runs],
        interruptions=job.interruptions,
        fallback_reason=job.fallback_reason,
        result=result,
        message=job.error,
        failure_reason=job.failure.value if job.failure else None,
        webhook=WebhookStatus.model_validate(
            delivery.model_dump(include=set(WebhookStatus.model_fields))
        )
        if delivery.enabled
        else None,
        started_at=job.started_at,
        finished_at=job.finished_at,
        expires_at=job.expires_at,
    )
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


# --- conditions --------------------------------------------------------------------------------

Wanted = tuple[str, ConditionStatus, str, str]
"""type, status, reason, message."""
TRUE, FALSE = ConditionStatus.true, ConditionStatus.false


def _running_reason(run: RunRecord) -> str:
    if run.fallback:
        return "Fallback"
    return "MainRunner" if run.attempt == 1 else "RetryingWithMoreMemory"


def _describe_run(run: RunRecord) -> str:
    runner = "light fallback" if run.fallback else "main runner"
    memory = f" with {mib_quantity(run.memory_mb)}" if run.memory_mb else ""
    return f"attempt {run.attempt}: {runner}{memory}"


def desired_conditions(job: Job) -> list[Wanted]:
    """The conditions that tell where `job` stands (metav1.Condition, Kueue style)."""
    wanted: list[Wanted] = []
    last = job.runs[-1] if job.runs else None
    if job.state is JobState.queued:
        position = f" (position {job.queue_position})" if job.queue_position else ""
        if last is None:
            wanted.append(("Admitted", FALSE, "Queued", f"waiting for a free slot{position}"))
        else:
            wanted.append(
                (
                    "Admitted",
                    FALSE,
                    "Requeued",
                    f"{last.message or 'interrupted'}; waiting to run again{position}",
                )
            )
        wanted.append(("Running", FALSE, "Queued", "not started yet"))
    elif last is None:  # refused before it could run
        reason = job.failure.value if job.failure else "Refused"
        wanted.append(("Admitted", FALSE, reason, job.error or ""))
    else:
        wanted.append(("Admitted", TRUE, "Admitted", "a runner slot was free"))
        if job.state is JobState.running:
            wanted.append(("Running", TRUE, _running_reason(last), _describe_run(last)))
        else:
            wanted.append(("Running", FALSE, "Finished", f"after {len(job.runs)} attempt(s)"))
    if job.fallback_reason is not None:
        wanted.append(("FallbackUsed", TRUE, "MainRunnerOutOfMemory", job.fallback_reason))
    if job.state in (JobState.done, JobState.expired) and job.result is not None:
        output = job.result.output
        message = f"{output.width}x{output.height} {output.format.value} ({job.result.method})"
        wanted.append(("Succeeded", TRUE, "ThumbnailWritten", message))
    if job.state in (JobState.failed, JobState.expired) and job.error is not None:
        reason = job.failure.value if job.failure else "Failed"
        wanted.append(("Failed", TRUE, reason, job.error))
    delivery = job.webhook
    if delivery.enabled and job.state is not JobState.queued and job.finished_at is not None:
        wanted.append(_webhook_condition(delivery))
    return wanted


def _webhook_condition(delivery: WebhookDelivery) -> Wanted:
    if delivery.delivered:
        return (
            "WebhookDelivered",
            TRUE,
            "Delivered",
            f"HTTP {delivery.last_status_code} after {delivery.attempts} attempt(s)",
        )
    if delivery.next_attempt_at is not None:
        reason = "Retrying" if delivery.attempts else "Pending"
        return ("WebhookDelivered", FALSE, reason, delivery.last_error or "not sent yet")
    return ("WebhookDelivered", FALSE, "GaveUp", delivery.last_error or "given up")


def merge_conditions(
    previous: list[Condition], wanted: list[Wanted], now: datetime, generation: int | None
) -> list[Condition]:
    before = {condition.type: condition for condition in previous}
    merged = []
    for kind, status, reason, message in wanted:
        old = before.get(kind)
        since = old.last_transition_time if old is not None and old.status is status else now
        merged.append(
            Condition(
                type=kind,
                status=status,
                reason=reason,
                message=message,
                last_transition_time=since,
                observed_generation=generation,
            )
        )
    return merged


# --- Events ------------------------------------------------------------------------------------

Story = tuple[str, str, str]
"""Event type (Normal/Warning), reason, message."""


def events(before: Job, after: Job) -> list[Story]:
    """The Kubernetes Events that tell what a transition did."""
    told: list[Story] = []
    old_runs = {run.attempt: run for run in before.runs}
    for run in after.runs:
        old = old_runs.get(run.attempt)
        if old is None:
            told.append(_run_started(run))
        if run.outcome is not None and (old is None or old.outcome is None):
            told.extend(_run_ended(run))
        for pod in run.disrupted[len(old.disrupted) if old else 0 :]:
            told.append(
                (
                    "Warning",
                    "PodDisrupted",
                    f"attempt {run.attempt}: pod {pod} was disrupted; its Job replaces it",
                )
            )
    if after.state is not before.state:
        if after.state is JobState.done and after.result is not None:
            output = after.result.output
            told.append(
                (
                    "Normal",
                    "Succeeded",
                    (
                        f"thumbnail {output.width}x{output.height} "
                        f"{output.format.value} written ({after.result.method})"
                    ),
                )
            )
        elif after.state is JobState.failed:
            reason = after.failure.value if after.failure else "Failed"
            told.append(("Warning", "Failed", f"{reason}: {after.error}"))
        elif after.state is JobState.queued and before.state is JobState.running:
            told.append(("Warning", "Requeued", "the run was interrupted; it will run again"))
        elif after.state is JobState.expired:
            told.append(("Normal", "Expired", "past ttlSecondsAfterFinished: deleting"))
    told.extend(_webhook_story(before.webhook, after.webhook))
    return told


def _run_started(run: RunRecord) -> Story:
    if run.fallback:
        return (
            "Warning",
            "FallingBack",
            f"{_describe_run(run)}: the main runner ran out of memory",
        )
    if run.attempt > 1 and run.memory_mb is not None:
        return ("Warning", "RetryingWithMoreMemory", _describe_run(run))
    return ("Normal", "Started", _describe_run(run))


def _run_ended(run: RunRecord) -> list[Story]:
    if run.outcome is RunOutcome.oom:
        return [("Warning", "OOMKilled", f"{_describe_run(run)} ran out of memory: {run.message}")]
    if run.outcome is RunOutcome.interrupted:
        return [("Warning", "Interrupted", f"{_describe_run(run)}: {run.message}")]
    return []


def _webhook_story(before: WebhookDelivery, after: WebhookDelivery) -> list[Story]:
    if after.attempts == before.attempts:
        return []
    if after.delivered:
        return [
            (
                "Normal",
                "WebhookDelivered",
                f"HTTP {after.last_status_code}, attempt {after.attempts}",
            )
        ]
    then = (
        f"; next attempt at {after.next_attempt_at.isoformat()}"
        if after.next_attempt_at
        else "; giving up"
    )
    return [("Warning", "WebhookFailed", f"attempt {after.attempts}: {after.last_error}{then}")]
