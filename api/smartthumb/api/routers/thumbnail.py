"""Seed 000: POST /thumbnail, GET /job/{id}, GET /job/{id}/image."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated

import anyio
from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response
from smartthumb.api.access import (
    find_job,
    finished_output,
    image_response,
    not_found,
    redirect_to_output,
)
from smartthumb.api.convert import variant
from smartthumb.api.deps import BackendDep, SettingsDep
from smartthumb.api.documents import conditional_response, json_response
from smartthumb.api.errors import documented
from smartthumb.api.inputs import check_count, decode_base64, inline_input, path_input, url_input
from smartthumb.api.jsonbody import OrjsonRoute
from smartthumb.api.links import LinksDep, links_for
from smartthumb.api.schemas.thumbnail import (
    ImageQuery,
    JobAccepted,
    JobStatus,
    JobWaitQuery,
    ThumbnailRequest,
)
from smartthumb.api.submit import submit
from smartthumb.api.views import job_accepted, job_status, summary_now
from smartthumb.operator.backend import Backend, InputFile, UnknownJobError
from smartthumb.operator.models import JobState
from smartthumb.runner.spec import OutputFormat

router = APIRouter(tags=["thumbnail jobs (seed 000)"], route_class=OrjsonRoute)

_TERMINAL = {JobState.done, JobState.failed, JobState.expired}


@router.post(
    "/thumbnail",
    status_code=202,
    response_model=JobAccepted,
    responses=documented(400, 401, 413, 422, 429),
    summary="Queue a thumbnail job",
)
def create_thumbnail(
    body: ThumbnailRequest, backend: BackendDep, settings: SettingsDep, links: LinksDep
) -> Response:
    paths = ([body.image_path] if body.image_path else []) + body.image_paths
    check_count(len(paths) + len(body.image_files) + len(body.image_urls), settings)
    inputs: list[InputFile] = [path_input(path, settings) for path in paths]
    for upload in body.image_files:
        data = decode_base64(
            upload.content_base64,
            upload.filename,
            settings.max_inline_bytes,
            field="content_base64",
        )
        inputs.append(inline_input(upload.filename, data, settings))
    inputs += [url_input(url, settings) for url in body.image_urls]
    webhook = str(body.webhook_url) if body.webhook_url else None
    # The webhook's links start where this client reached the API (or at PUBLIC_URL).
    job = submit(
        backend,
        body.spec(),
        inputs,
        max_pixels=settings.max_pixels,
        webhook_url=webhook,
        api_url=links.base_url,
    )
    document = {
        **job_accepted(job, links),
        **summary_now(job, backend.stats().queued, backend.ttl_s),
    }
    return json_response(document, status_code=202)


@router.get(
    "/job/{job_id}",
    response_model=JobStatus,
    responses=documented(401, 404, 422),
    summary="Status, webhook delivery and result of a job",
)
async def get_job(
    job_id: str, query: Annotated[JobWaitQuery, Query()], request: Request
) -> Response:
    return await job_answer(request, job_id, query.wait)


async def job_answer(request: Request, job_id: str, wait: float) -> Response:
    """GET /job/{id}, also served by fastpath.FastPath (which skips FastAPI's routing).
    Reads are served from the backend's memory, and a long-poll waits on the event loop for
    the backend's news of the job: no thread hop at all."""
    state = request.app.state
    backend: Backend = state.backend
    links = links_for(request)
    job = find_job(backend, job_id)
    timeout = min(wait, state.settings.max_wait_s)
    if timeout > 0 and job.state not in _TERMINAL:
        await _until_finished(backend, job_id, timeout)
        job = find_job(backend, job_id)  # where the job stands now (404 if it expired)
    changing = summary_now(job, backend.stats().queued, backend.ttl_s)
    rendered = state.documents.render("job", job, links, job_status, changing)
    return conditional_response(request, rendered)


async def _until_finished(backend: Backend, job_id: str, timeout: float) -> None:
    """Until the job is finished or gone, or `timeout` seconds have passed."""
    loop = asyncio.get_running_loop()
    changed = asyncio.Event()

    def wake() -> None:  # in a backend thread
        with contextlib.suppress(RuntimeError):  # the loop has closed (shutting down)
            loop.call_soon_threadsafe(changed.set)

    unsubscribe = backend.subscribe(job_id, wake)  # before the look: no change is missed
    try:
        with anyio.move_on_after(timeout):
            while (job := backend.get(job_id)) is not None and job.state not in _TERMINAL:
                await changed.wait()
                changed.clear()
    finally:
        unsubscribe()


@router.delete(
    "/job/{job_id}",
    status_code=204,
    responses=documented(401, 404),
    summary="Cancel a job: stop it if it runs, delete it and its images",
)
def cancel_job(job_id: str, backend: BackendDep) -> Response:
    try:
        backend.cancel(job_id)
    except UnknownJobError:
        raise not_found(job_id) from None
    return Response(status_code=204)


@router.get(
    "/job/{job_id}/image",
    response_class=FileResponse,
    responses={
        200: {"content": {"image/*": {}}, "description": "The image."},
        **documented(401, 404, 409, 422, 429, 503),
    },
    summary="The thumbnail, optionally converted (cached on disk)",
)
def get_job_image(
    job_id: str, query: Annotated[ImageQuery, Query()], backend: BackendDep, settings: SettingsDep
) -> Response:
    job = find_job(backend, job_id)
    plain = query.format is None and query.width is None and query.quality is None
    redirect = redirect_to_output(backend, job) if plain else None
    if redirect is not None:
        return redirect
    source = finished_output(backend, job)
    fmt = OutputFormat.from_name(query.format) if query.format else job.spec.format
    if plain:
        path = source
    else:
        quality = query.quality or job.spec.quality
        path = variant(
            source, fmt, query.width, quality, grayscale=job.spec.grayscale, limits=settings.limits
        )
    return image_response(
        path,
        fmt.media_type,
        f"{job.id}.{fmt.extension}",
        inline=True,
        headers={"Cache-Control": "private, max-age=3600"},
    )
