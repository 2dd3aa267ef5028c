"""Seeds 001 and 004: POST /upload and its status and result documents."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

CeleryState = Literal["PENDING", "PROGRESS", "SUCCESS", "FAILURE"]


class UploadedFile(BaseModel):
    id: str
    filename: str
    status_url: str
    result_url: str
    image_url: str


class UploadAccepted(BaseModel):
    """Seed 004's answer for the first file, plus every file of the batch."""

    id: str = Field(description="Job id of the first file.")
    task_id: str = Field(description="The same id (seed 004 clients read task_id).")
    filename: str
    status_url: str
    result_url: str
    image_url: str
    message: str
    batch_id: str
    batch_url: str
    files: list[UploadedFile]


class UploadStatus(BaseModel):
    id: str
    task_id: str
    status: CeleryState
    error: str | None


class UploadVariants(BaseModel):
    resized_compressed: str = Field(description="The 300x300 image as JPEG quality 60.")
    thumbnail: str = Field(description="A 150 px wide JPEG copy.")
    original: str = Field(description="The 300x300 image as produced.")


class UploadResult(BaseModel):
    status: CeleryState
    result: UploadVariants | None
    error: str | None
