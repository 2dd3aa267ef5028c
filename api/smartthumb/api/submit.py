"""Handing validated inputs to the backend, with its refusals turned into 4xx answers."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from smartthumb.api.errors import ApiError
from smartthumb.operator.backend import (
    Backend,
    InputError,
    InputFile,
    QueueFullError,
    WebhookRefusedError,
)
from smartthumb.operator.models import Job
from smartthumb.runner.encode import output_refusal
from smartthumb.runner.spec import ThumbnailSpec


@contextmanager
def _refusals() -> Iterator[None]:
    try:
        yield
    except InputError as error:
        raise ApiError(400, "invalid_input", str(error)) from None
    except WebhookRefusedError as error:
        raise ApiError(400, "webhook_url_refused", str(error)) from None
    except QueueFullError as error:
        raise ApiError(429, "queue_full", str(error), {"Retry-After": "5"}) from None


def submit(
    backend: Backend,
    spec: ThumbnailSpec,
    inputs: Sequence[InputFile],
    *,
    max_pixels: int,
    webhook_url: str | None = None,
    batch_id: str | None = None,
    api_url: str | None = None,
) -> Job:
    """422 for an output the runner would refuse, where the spec alone decides its size
    (otherwise the runner fails the job with the same words)."""
    size = spec.output_size()
    refusal = output_refusal(*size, spec.format, max_pixels) if size else None
    if refusal is not None:
        raise ApiError(422, "output_too_large", refusal)
    with _refusals():
        return backend.submit(
            spec, inputs, webhook_url=webhook_url, batch_id=batch_id, api_url=api_url
        )


def submit_all(
    backend: Backend, spec: ThumbnailSpec, inputs: Sequence[InputFile], batch_id: str
) -> list[Job]:
    """One job per input, all or none."""
    with _refusals():
        return backend.submit_batch(spec, inputs, batch_id)
