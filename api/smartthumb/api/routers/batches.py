"""Seed 003: POST /process-images (many files, one job each) and GET /batches/{id}."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Response, UploadFile
from smartthumb.api.deps import BackendDep, SettingsDep
from smartthumb.api.documents import model_response
from smartthumb.api.errors import ApiError, documented
from smartthumb.api.links import Links, LinksDep
from smartthumb.api.schemas.batches import (
    BatchAccepted,
    BatchFile,
    BatchProgress,
    BatchState,
    BatchStatus,
    FileState,
)
from smartthumb.api.uploads import submit_batch
from smartthumb.api.views import FILE_STATES, file_result
from smartthumb.operator.models import Job
from smartthumb.runner.spec import Mode, ThumbnailSpec

router = APIRouter(tags=["batches (seed 003)"])

SEED_003_SPEC = ThumbnailSpec(mode=Mode.fit, width=512, grayscale=True, quality=80)
"""512 px wide (aspect kept, never enlarged), grayscale, JPEG quality 80."""


@router.post(
    "/process-images",
    status_code=202,
    response_model=BatchAccepted,
    responses=documented(400, 401, 413, 422, 429),
    summary="Queue one 512-wide grayscale JPEG job per uploaded image",
)
async def process_images(
    images: Annotated[list[UploadFile], File(description="The images (multipart field 'images').")],
    backend: BackendDep,
    settings: SettingsDep,
    links: LinksDep,
) -> Response:
    batch_id, jobs = await submit_batch(backend, settings, images, SEED_003_SPEC)
    accepted = BatchAccepted(
        batch_id=batch_id,
        status_url=links.batch(batch_id),
        total_files=len(jobs),
        job_ids=[job.id for job in jobs],
    )
    return model_response(accepted, status_code=202)


@router.get(
    "/batches/{batch_id}",
    response_model=BatchStatus,
    responses=documented(401, 404),
    summary="Progress of every job of a batch",
)
def get_batch(batch_id: str, backend: BackendDep, links: LinksDep) -> Response:
    jobs = backend.list_batch(batch_id)
    files = [_file(job, links) for job in jobs if job.state in FILE_STATES]
    if not files:
        raise ApiError(404, "batch_not_found", f"batch {batch_id} is unknown or has expired")
    states = [entry.state for entry in files]
    progress = BatchProgress(
        total=len(files),
        completed=states.count(FileState.completed),
        failed=states.count(FileState.failed),
        active=states.count(FileState.active),
        waiting=states.count(FileState.waiting),
    )
    status = BatchStatus(
        batch_id=batch_id,
        status=_batch_state(progress),
        progress=progress,
        created_at=min(job.created_at for job in jobs),
        files=files,
    )
    return model_response(status)


def _file(job: Job, links: Links) -> BatchFile:
    return BatchFile(
        job_id=job.id,
        original_name=job.input_names[0] if job.input_names else job.id,
        state=FILE_STATES[job.state],
        result=file_result(job, links),
        failed_reason=job.error,
    )


def _batch_state(progress: BatchProgress) -> BatchState:
    if progress.waiting == progress.total:
        return BatchState.waiting
    if progress.active or progress.waiting:
        return BatchState.processing
    return BatchState.completed_with_errors if progress.failed else BatchState.completed
