"""Seed 003: POST /process-images and GET /batches/{id} (camelCase, as its clients expect)."""

from __future__ import annotations

from datetime import datetime
from enum import Enum

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class BatchAccepted(_Camel):
    batch_id: str
    status_url: str = Field(description="Path of GET /batches/{batchId}.")
    total_files: int
    job_ids: list[str] = Field(description="One job per file, in upload order.")


class BatchState(str, Enum):
    waiting = "waiting"
    processing = "processing"
    completed = "completed"
    completed_with_errors = "completed-with-errors"


class FileState(str, Enum):
    waiting = "waiting"
    active = "active"
    completed = "completed"
    failed = "failed"


class BatchProgress(_Camel):
    total: int
    completed: int
    failed: int
    active: int
    waiting: int


class FileResult(_Camel):
    original_name: str
    output_path: str = Field(description="Path of the image (GET /job/{id}/image).")
    width: int
    height: int
    format: str
    bytes: int


class BatchFile(_Camel):
    job_id: str
    original_name: str
    state: FileState
    result: FileResult | None
    failed_reason: str | None


class BatchStatus(_Camel):
    batch_id: str
    status: BatchState
    progress: BatchProgress
    created_at: datetime
    files: list[BatchFile]
