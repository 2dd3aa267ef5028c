"""GET /metrics: the backend's Prometheus metrics (smartthumb.operator.metrics registers them
on prometheus_client's default registry, beside the process and Python collectors)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text."}},
    summary="Prometheus metrics: queue, jobs by final state, durations, OOMs, webhooks",
)
def metrics(request: Request) -> Response:
    # With several API processes, the engine's process (where the jobs are counted) answers.
    source = request.app.state.metrics_source
    text = source() if source is not None else generate_latest(REGISTRY)
    return Response(text, media_type=CONTENT_TYPE_LATEST)
