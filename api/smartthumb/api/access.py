"""Looking up jobs and their images, with the 404/409/422 answers every route shares."""

from __future__ import annotations

from pathlib import Path

from fastapi.responses import RedirectResponse
from smartthumb.api.errors import ApiError
from smartthumb.operator.backend import Backend
from smartthumb.operator.models import Job, JobState


def not_found(job_id: str) -> ApiError:
    return ApiError(404, "job_not_found", f"job {job_id} is unknown or has expired")


def find_job(backend: Backend, job_id: str) -> Job:
    job = backend.get(job_id)
    if job is None or job.state is JobState.expired:
        raise not_found(job_id)
    return job


def check_finished(job: Job) -> None:
    """409 while the job is queued or running, 422 if it failed."""
    if job.state is JobState.failed:
        raise ApiError(422, "job_failed", f"job {job.id} failed: {job.error or 'unknown error'}")
    if job.state is not JobState.done:
        raise ApiError(409, "job_not_finished", f"job {job.id} is {job.state.value}; try later")


def redirect_to_output(backend: Backend, job: Job) -> RedirectResponse | None:
    """A redirect to where the client fetches the image itself (a presigned URL), when the
    backend offers one; the same 409/422 rules first."""
    check_finished(job)
    url = backend.output_url(job)
    return RedirectResponse(url, status_code=307) if url is not None else None


def finished_output(backend: Backend, job: Job) -> Path:
    """The stored image of a done job as a local file (same 409/422 rules)."""
    check_finished(job)
    path = backend.output_file(job)
    if path is None:
        raise ApiError(404, "job_not_found", f"job {job.id} has no image any more (expired)")
    return path
