"""Multipart uploads -> one job per file sharing a batch id (seeds 001, 003 and 004)."""

from __future__ import annotations

import uuid

from fastapi import UploadFile
from smartthumb.api.inputs import check_count, upload_input
from smartthumb.api.settings import ApiSettings
from smartthumb.api.submit import submit_all
from smartthumb.operator.backend import Backend, InputFile
from smartthumb.operator.models import Job
from smartthumb.runner.spec import ThumbnailSpec
from starlette.concurrency import run_in_threadpool


async def submit_batch(
    backend: Backend, settings: ApiSettings, uploads: list[UploadFile], spec: ThumbnailSpec
) -> tuple[str, list[Job]]:
    """Every file is checked before any job is created, so a bad file queues nothing."""
    check_count(len(uploads), settings)
    inputs = [await upload_input(upload, settings) for upload in uploads]
    return await run_in_threadpool(_submit_all, backend, spec, inputs)


def _submit_all(
    backend: Backend, spec: ThumbnailSpec, inputs: list[InputFile]
) -> tuple[str, list[Job]]:
    batch_id = uuid.uuid4().hex
    return batch_id, submit_all(backend, spec, inputs, batch_id)
