"""Job (the backend's record) -> the documents that describe it, as plain data for orjson: they
are made from trusted data, so they are not validated again on the way out (the response
models in schemas/ document them, and the tests check each one against its model). One
mapping, used by every route that describes a job, so the status vocabulary and the URLs
never drift apart."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from smartthumb.api.links import Links
from smartthumb.api.schemas.batches import FileState
from smartthumb.api.schemas.thumbnail import JobStatusName
from smartthumb.operator.models import Job, JobState, WebhookDelivery

STATUS_NAMES = {
    JobState.queued: JobStatusName.queued,
    JobState.running: JobStatusName.processing,
    JobState.done: JobStatusName.done,
    JobState.failed: JobStatusName.failed,
}


def status_name(job: Job) -> JobStatusName:
    return STATUS_NAMES[job.state]


def expires_in(job: Job, ttl_s: float) -> int:
    """Seconds left; before the job finishes, the TTL it will get then (it counts from the end)."""
    if job.expires_at is None:
        return int(ttl_s)
    return max(0, int((job.expires_at - datetime.now(UTC)).total_seconds()))


def job_result(job: Job, links: Links) -> dict[str, Any] | None:
    result = job.result
    if result is None or job.state is not JobState.done:
        return None
    selected = set(result.selected)
    candidates = [
        {
            "index": report.index,
            "name": _input_name(job, report.index),
            "width": report.width,
            "height": report.height,
            "score": report.score,
            "crop": report.crop.model_dump(mode="json") if report.crop else None,
            "detector": report.detector,
            "selected": report.index in selected,
        }
        for report in result.inputs
    ]
    return {
        "method": result.method,
        "mode": result.mode.value,
        "output_path": links.absolute(links.image(job.id)),
        "output": result.output.model_dump(mode="json"),
        "composed_from": [_input_name(job, index) for index in result.selected],
        "selected_page_index": result.selected[0] if result.selected else None,
        "selected_page_indexes": list(result.selected),
        "fallback_used": result.fallback_used,
        "worker_warning": result.worker_warning,
        "candidates": candidates,
        "timings_ms": result.timings_ms,
    }


def _input_name(job: Job, index: int) -> str:
    names = job.input_names
    return names[index] if 0 <= index < len(names) else f"#{index}"


def _summary(job: Job, links: Links) -> dict[str, Any]:
    """JobSummary's fields; the changing ones (queue, expiry) are filled in by `summary_now`."""
    return {
        "job_id": job.id,
        "status": status_name(job).value,
        "queue_position": None,
        "pending_jobs": 0,
        "job_url": links.absolute(links.job(job.id)),
        "image_url": links.absolute(links.image(job.id)),
        "created_at": job.created_at,
        "expires_in_seconds": 0,
    }


def summary_now(job: Job, pending_jobs: int, ttl_s: float) -> dict[str, Any]:
    """The summary's fields that change without the job changing: the queue, the expiry."""
    return {
        "queue_position": job.queue_position,
        "pending_jobs": pending_jobs,
        "expires_in_seconds": expires_in(job, ttl_s),
    }


def redacted_url(url: str) -> str:
    """scheme://host[:port]/path: userinfo and the query often carry the receiver's secret."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def redacted_webhook(webhook: WebhookDelivery) -> dict[str, Any]:
    shown = webhook.model_dump(mode="json")
    if webhook.url is not None:
        shown["url"] = redacted_url(webhook.url)
    return shown


def job_accepted(job: Job, links: Links) -> dict[str, Any]:
    """JobAccepted, less what `summary_now` fills in."""
    return {**_summary(job, links), "webhook_enabled": job.webhook.enabled}


def job_status(job: Job, links: Links) -> dict[str, Any]:
    """JobStatus, less what `summary_now` fills in."""
    return {
        **_summary(job, links),
        "batch_id": job.batch_id,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "expires_at": job.expires_at,
        "error": job.error,
        "webhook": redacted_webhook(job.webhook),
        "spec": job.spec.model_dump(mode="json"),
        "inputs": list(job.input_names),
        "result": job_result(job, links),
    }


FILE_STATES = {
    JobState.queued: FileState.waiting,
    JobState.running: FileState.active,
    JobState.done: FileState.completed,
    JobState.failed: FileState.failed,
}


def file_result(job: Job, links: Links) -> dict[str, Any] | None:
    """The per-file result of seeds 002/003: a relative image path, never a server path."""
    if job.result is None or job.state is not JobState.done:
        return None
    output = job.result.output
    return {
        "originalName": job.input_names[0] if job.input_names else job.id,
        "outputPath": links.image(job.id),
        "width": output.width,
        "height": output.height,
        "format": output.format.value,
        "bytes": output.bytes,
    }
