"""Seed 002: POST /jobs, GET /jobs/{id}, GET /jobs/{id}/download. GET /jobs/{id} also
carries seed 003's per-job fields (jobId, state, progress, result, failedReason)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response
from smartthumb.api.access import find_job, finished_output, image_response, redirect_to_output
from smartthumb.api.deps import BackendDep
from smartthumb.api.documents import Rendered, conditional_response, json_response
from smartthumb.api.errors import documented
from smartthumb.api.inputs import decode_base64, inline_input
from smartthumb.api.jsonbody import OrjsonRoute
from smartthumb.api.links import Links, links_for
from smartthumb.api.schemas.jobs import (
    SimpleJobAccepted,
    SimpleJobRequest,
    SimpleJobStatus,
    SimpleStatus,
)
from smartthumb.api.settings import ApiSettings
from smartthumb.api.submit import submit
from smartthumb.api.views import FILE_STATES, file_result
from smartthumb.operator.models import Job, JobState
from smartthumb.runner.spec import Mode, OutputFormat

router = APIRouter(tags=["jobs (seeds 002, 003)"], route_class=OrjsonRoute)

_STATUSES = {
    JobState.queued: SimpleStatus.pending,
    JobState.running: SimpleStatus.processing,
    JobState.done: SimpleStatus.completed,
    JobState.failed: SimpleStatus.failed,
}
_OPERATIONS = {Mode.resize: "resize", Mode.fit: "thumbnail"}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@router.post(
    "/jobs",
    status_code=202,
    response_model=SimpleJobAccepted,
    responses=documented(400, 401, 413, 422, 429),
    summary="Queue a resize (exact size) or thumbnail (fit inside) job",
)
def create_job(body: SimpleJobRequest, request: Request) -> Response:
    return accept_simple_job(request, body)


def accept_simple_job(request: Request, body: SimpleJobRequest) -> Response:
    """POST /jobs, also served by fastpath.FastPath (which skips FastAPI's routing and
    dependencies). In a worker thread: it decodes and hands the bytes to the backend."""
    state = request.app.state
    settings: ApiSettings = state.settings
    links = links_for(request)
    data = decode_base64(
        body.image_data, "image_data", settings.max_inline_bytes, field="the value"
    )
    image = inline_input("image_data", data, settings)
    # Seed 002: without output_format the output keeps the input's format (png or jpeg).
    source_format = OutputFormat.png if data.startswith(_PNG_SIGNATURE) else OutputFormat.jpeg
    job = submit(state.backend, body.spec(source_format), [image], max_pixels=settings.max_pixels)
    accepted = {
        "job_id": job.id,
        "status": "pending",
        "message": "Image processing job submitted",
        "job_url": links.absolute(links.simple_job(job.id)),
        "download_url": links.absolute(links.download(job.id)),
    }
    return json_response(accepted, status_code=202)


@router.get(
    "/jobs/{job_id}",
    response_model=SimpleJobStatus,
    responses=documented(401, 404),
    summary="Status of one job (seed 002 and seed 003 fields)",
)
async def get_simple_job(job_id: str, request: Request) -> Response:
    return await simple_job_answer(request, job_id)


async def simple_job_answer(request: Request, job_id: str) -> Response:
    """GET /jobs/{id}, also served by fastpath.FastPath (which skips FastAPI's routing).
    From the backend's memory: no thread hop."""
    job = find_job(request.app.state.backend, job_id)
    return conditional_response(request, simple_document(request, job))


def simple_document(request: Request, job: Job) -> Rendered:
    """GET /jobs/{id}'s document of `job`, made once per revision (and links base)."""
    return request.app.state.documents.render("simple", job, links_for(request), _simple_status)


def _simple_status(job: Job, links: Links) -> dict[str, Any]:
    """SimpleJobStatus (by its aliases)."""
    done = job.state is JobState.done
    download = links.absolute(links.download(job.id))
    return {
        "id": job.id,
        "jobId": job.id,
        "status": _STATUSES[job.state].value,
        "state": FILE_STATES[job.state].value,
        "progress": 100 if job.state in (JobState.done, JobState.failed) else 0,
        "operation": _OPERATIONS.get(job.spec.mode, job.spec.mode.value),
        "width": job.spec.width,
        "height": job.spec.height,
        "output_format": job.spec.format.value,
        "output_path": download if done else None,
        "download_url": download,
        "created_at": job.created_at,
        "updated_at": job.finished_at or job.started_at or job.created_at,
        "error": job.error,
        "failedReason": job.error,
        "result": file_result(job, links),
    }


@router.get(
    "/jobs/{job_id}/download",
    response_class=FileResponse,
    responses={
        200: {"content": {"image/*": {}}, "description": "The image."},
        **documented(401, 404, 409, 422),
    },
    summary="The processed image",
)
def download(job_id: str, backend: BackendDep) -> Response:
    job = find_job(backend, job_id)
    redirect = redirect_to_output(backend, job)
    if redirect is not None:
        return redirect
    path = finished_output(backend, job)
    fmt = job.spec.format
    return image_response(path, fmt.media_type, f"{job.id}.{fmt.extension}")
