"""Seeds 001 and 004 share POST /upload (multipart `file`).

Behaviour chosen: seed 001's 300x300 thumbnail made without distortion (mode crop: the
subject-aware 300x300 window, never enlarged), answered with seed 004's document. Several
`file` parts make one job each, sharing a batch id. Seed 004's two variants are links to
GET /job/{id}/image conversions of that one output; there is no /files/ route that could
serve originals.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Response, UploadFile
from smartthumb.api.access import find_job
from smartthumb.api.deps import BackendDep, SettingsDep
from smartthumb.api.documents import model_response
from smartthumb.api.errors import documented
from smartthumb.api.links import Links, LinksDep
from smartthumb.api.schemas.uploads import (
    CeleryState,
    UploadAccepted,
    UploadedFile,
    UploadResult,
    UploadStatus,
    UploadVariants,
)
from smartthumb.api.uploads import submit_batch
from smartthumb.operator.models import Job, JobState
from smartthumb.runner.spec import Mode, ThumbnailSpec

router = APIRouter(tags=["uploads (seeds 001, 004)"])

SEED_001_SPEC = ThumbnailSpec(mode=Mode.crop, width=300, height=300)

_CELERY_STATES: dict[JobState, CeleryState] = {
    JobState.queued: "PENDING",
    JobState.running: "PROGRESS",
    JobState.done: "SUCCESS",
    JobState.failed: "FAILURE",
}


@router.post(
    "/upload",
    status_code=202,
    response_model=UploadAccepted,
    responses=documented(400, 401, 413, 422, 429),
    summary="Queue a 300x300 thumbnail per uploaded file",
)
async def upload(
    file: Annotated[list[UploadFile], File(description="One or more images (field 'file').")],
    backend: BackendDep,
    settings: SettingsDep,
    links: LinksDep,
) -> Response:
    batch_id, jobs = await submit_batch(backend, settings, file, SEED_001_SPEC)
    files = [_uploaded(job, links) for job in jobs]
    first = files[0]
    accepted = UploadAccepted(
        **first.model_dump(),
        task_id=first.id,
        message=f"{len(files)} file(s) uploaded; processing started in the background.",
        batch_id=batch_id,
        batch_url=links.batch(batch_id),
        files=files,
    )
    return model_response(accepted, status_code=202)


@router.get(
    "/upload/{job_id}/status",
    response_model=UploadStatus,
    responses=documented(401, 404),
    summary="PENDING -> PROGRESS -> SUCCESS | FAILURE",
)
def upload_status(job_id: str, backend: BackendDep) -> Response:
    job = find_job(backend, job_id)
    return model_response(
        UploadStatus(id=job.id, task_id=job.id, status=_CELERY_STATES[job.state], error=job.error)
    )


@router.get(
    "/upload/{job_id}/result",
    response_model=UploadResult,
    responses=documented(401, 404),
    summary="Links to the compressed and thumbnail variants once done",
)
def upload_result(job_id: str, backend: BackendDep, links: LinksDep) -> Response:
    job = find_job(backend, job_id)
    variants = None
    if job.state is JobState.done:
        variants = UploadVariants(
            resized_compressed=links.image(job.id, format="jpeg", quality=60),
            thumbnail=links.image(job.id, format="jpeg", width=150),
            original=links.image(job.id),
        )
    return model_response(
        UploadResult(status=_CELERY_STATES[job.state], result=variants, error=job.error)
    )


def _uploaded(job: Job, links: Links) -> UploadedFile:
    return UploadedFile(
        id=job.id,
        filename=job.input_names[0] if job.input_names else job.id,
        status_url=links.upload_status(job.id),
        result_url=links.upload_result(job.id),
        image_url=links.image(job.id),
    )
