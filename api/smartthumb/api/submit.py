"""Handing validated inputs to the engine, with its refusals turned into 4xx answers."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from smartthumb.api.errors import ApiError
from smartthumb.operator.local.engine import InputError, InputFile, LocalEngine, QueueFullError
from smartthumb.operator.models import Job
from smartthumb.runner.netguard import RefusedURL
from smartthumb.runner.spec import ThumbnailSpec


@contextmanager
def _engine_refusals() -> Iterator[None]:
    try:
        yield
    except InputError as error:
        raise ApiError(400, "invalid_input", str(error)) from None
    except RefusedURL as error:
        raise ApiError(400, "webhook_url_refused", f"webhook_url: {error}") from None
    except QueueFullError as error:
        raise ApiError(429, "queue_full", str(error), {"Retry-After": "5"}) from None


def submit(
    engine: LocalEngine,
    spec: ThumbnailSpec,
    inputs: Sequence[InputFile],
    *,
    webhook_url: str | None = None,
    batch_id: str | None = None,
) -> Job:
    with _engine_refusals():
        return engine.submit(spec, inputs, webhook_url=webhook_url, batch_id=batch_id)


def submit_all(
    engine: LocalEngine, spec: ThumbnailSpec, inputs: Sequence[InputFile], batch_id: str
) -> list[Job]:
    """One job per input, all or none."""
    with _engine_refusals():
        return engine.submit_batch(spec, inputs, batch_id)
