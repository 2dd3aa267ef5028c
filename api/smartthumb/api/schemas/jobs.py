"""Seed 002's POST /jobs and the GET /jobs/{id} document shared by seeds 002 and 003."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from smartthumb.api.schemas.batches import FileResult, FileState
from smartthumb.runner.spec import Mode, OutputFormat, Side, ThumbnailSpec

_MODES = {"resize": Mode.resize, "thumbnail": Mode.fit}


class SimpleJobRequest(BaseModel):
    """resize: exactly width x height (may distort); thumbnail: fit inside, aspect kept,
    never enlarged."""

    model_config = ConfigDict(extra="forbid")

    image_data: str = Field(min_length=1, description="The image, base64.")
    operation: Literal["resize", "thumbnail"]
    width: Side | None = None
    height: Side | None = None
    output_format: Literal["jpeg", "png"] | None = Field(
        None, description="Default: the input's format when png, else jpeg."
    )

    @model_validator(mode="after")
    def _valid_spec(self) -> SimpleJobRequest:
        self.spec(OutputFormat.jpeg)  # refuses a bad size combination as a 422 right here
        return self

    def spec(self, input_format: OutputFormat) -> ThumbnailSpec:
        fmt = OutputFormat(self.output_format) if self.output_format else input_format
        return ThumbnailSpec(
            mode=_MODES[self.operation], width=self.width, height=self.height, format=fmt
        )


class SimpleJobAccepted(BaseModel):
    job_id: str
    status: Literal["pending"] = "pending"
    message: str
    job_url: str
    download_url: str


class SimpleStatus(str, Enum):
    pending = "pending"
    processing = "processing"
    completed = "completed"
    failed = "failed"


class SimpleJobStatus(BaseModel):
    """Seed 002's fields (id, status, operation, ...) and seed 003's (jobId, state, progress,
    result, failedReason) in one document."""

    model_config = ConfigDict(populate_by_name=True)

    id: str
    job_id: str = Field(alias="jobId")
    status: SimpleStatus
    state: FileState
    progress: int = Field(description="0 until the job has finished, then 100.")
    operation: str = Field(description="resize, thumbnail, or the mode of a non-seed-002 job.")
    width: int | None
    height: int | None
    output_format: str
    output_path: str | None = Field(description="Download URL once completed.")
    download_url: str
    created_at: datetime
    updated_at: datetime
    error: str | None
    failed_reason: str | None = Field(alias="failedReason")
    result: FileResult | None
