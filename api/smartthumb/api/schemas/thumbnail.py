"""POST /thumbnail and GET /job/{id}: seed 000's contract on top of ThumbnailSpec."""

from __future__ import annotations

from datetime import datetime
from enum import Enum

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field
from smartthumb.operator.models import WebhookDelivery
from smartthumb.runner.spec import Box, OutputReport, Side, ThumbnailSpec


class ImageFile(BaseModel):
    """An image sent inline."""

    model_config = ConfigDict(extra="forbid")

    filename: str = Field(min_length=1, max_length=255, description="Shown in results only.")
    content_base64: str = Field(
        min_length=1, description="The file, base64 (a `data:...;base64,` prefix is accepted)."
    )


class ThumbnailRequest(ThumbnailSpec):
    """A ThumbnailSpec (every field of it) plus where the images come from.

    Images are pages in order: `image_path`, then `image_paths`, then `image_files`, then
    `image_urls`.
    """

    image_path: str | None = Field(None, description="One file under the server's input root.")
    image_paths: list[str] = Field(
        default_factory=list,
        description="Files under the server's input root (SMARTTHUMB_INPUT_ROOT).",
    )
    image_files: list[ImageFile] = Field(default_factory=list, description="Uploaded images.")
    image_urls: list[str] = Field(
        default_factory=list,
        description=(
            "http(s) URLs the runner fetches (public addresses only, unless "
            "SMARTTHUMB_ALLOW_PRIVATE_SOURCES; hosts limited by SMARTTHUMB_ALLOWED_SOURCES)."
        ),
    )
    webhook_url: AnyHttpUrl | None = Field(
        None, description="POSTed a signed JSON event when the job is done or failed."
    )
    return_candidates: bool = Field(
        True, description="Accepted for seed-000 clients; candidates are always returned."
    )

    def spec(self) -> ThumbnailSpec:
        return ThumbnailSpec.model_validate(
            self.model_dump(include=set(ThumbnailSpec.model_fields))
        )


class JobStatusName(str, Enum):
    queued = "queued"
    processing = "processing"
    done = "done"
    failed = "failed"


class JobSummary(BaseModel):
    """What every document about a job starts with."""

    job_id: str
    status: JobStatusName
    queue_position: int | None = Field(description="1 = next to run; null once running.")
    pending_jobs: int = Field(description="Jobs waiting in the queue right now.")
    job_url: str
    image_url: str
    created_at: datetime
    expires_in_seconds: int = Field(description="Seconds until the job and its files are deleted.")


class JobAccepted(JobSummary):
    """202 answer to POST /thumbnail."""

    webhook_enabled: bool


class Candidate(BaseModel):
    """What the runner made of one input page."""

    index: int
    name: str
    width: int
    height: int
    score: float | None = None
    crop: Box | None = None
    detector: str | None = None
    selected: bool


class JobResult(BaseModel):
    method: str
    mode: str
    output_path: str = Field(description="URL of the image (never a server path).")
    output: OutputReport
    composed_from: list[str] = Field(description="Names of the inputs the thumbnail shows.")
    selected_page_index: int | None = Field(description="Index of the first input used.")
    selected_page_indexes: list[int]
    fallback_used: bool
    worker_warning: str | None
    candidates: list[Candidate]
    timings_ms: dict[str, float]


class JobStatus(JobSummary):
    """GET /job/{id}."""

    batch_id: str | None
    started_at: datetime | None
    finished_at: datetime | None
    expires_at: datetime | None
    error: str | None
    webhook: WebhookDelivery = Field(
        description="Delivery state; `url` without userinfo and query (they may hold secrets)."
    )
    spec: ThumbnailSpec
    inputs: list[str] = Field(description="Input names, in page order.")
    result: JobResult | None


class ImageQuery(BaseModel):
    """GET /job/{id}/image conversions; none given: the stored image as it is."""

    model_config = ConfigDict(extra="forbid")

    format: str | None = Field(
        None, pattern=r"^(jpe?g|png|webp|avif)$", description="jpg|jpeg|png|webp|avif."
    )
    width: Side | None = Field(None, description="Narrower copy; never enlarged.")
    quality: int | None = Field(None, ge=1, le=100, description="Encoder quality.")


class JobWaitQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    wait: float = Field(
        0,
        ge=0,
        description="Long-poll: answer once the job is done/failed or after this many seconds.",
    )
