"""Looking up jobs and their images, with the 404/409/422 answers every route shares."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from fastapi import Response
from fastapi.responses import FileResponse, RedirectResponse
from smartthumb.api.errors import ApiError
from smartthumb.operator.backend import Backend
from smartthumb.operator.models import Job, JobState

SMALL_FILE = 1024 * 1024
"""Images up to this size are read whole by the route's thread and sent at once: Starlette's
FileResponse takes a thread hop for the stat, the open, each chunk and the close (~3 ms of
CPU per download here, against ~30 us for a status poll)."""


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


def image_response(
    path: Path,
    media_type: str,
    filename: str,
    *,
    inline: bool = False,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """The image at `path` with FileResponse's headers (type, length, disposition, ETag, last
    modified); read here, in the route's thread, when it is small."""
    with path.open("rb") as file:
        stat = os.fstat(file.fileno())  # of the file read: an atomic replace cannot mismatch
        response = FileResponse(
            path,
            media_type=media_type,
            filename=filename,
            content_disposition_type="inline" if inline else "attachment",
            headers=headers,
            stat_result=stat,
        )
        if stat.st_size > SMALL_FILE:
            return response
        data = file.read()
    del response.headers["accept-ranges"]  # sent whole: no ranges
    return Response(data, headers=dict(response.headers))
