"""GET /metrics: the engine's Prometheus counters, plus queue gauges read at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from smartthumb.api.deps import EngineDep
from smartthumb.operator.local.engine import LocalEngine

router = APIRouter(tags=["metrics"])


class QueueCollector(Collector):
    """Reads engine.stats() on each scrape, so the gauges are never stale."""

    def __init__(self, engine: LocalEngine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stats = self.engine.stats()
        yield GaugeMetricFamily("smartthumb_queue_depth", "Jobs waiting to run.", stats.queued)
        yield GaugeMetricFamily("smartthumb_jobs_running", "Jobs running now.", stats.running)
        yield GaugeMetricFamily(
            "smartthumb_queue_capacity", "Most queued jobs accepted.", stats.capacity
        )
        yield GaugeMetricFamily("smartthumb_workers", "Jobs that run at once.", stats.workers)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text."}},
    summary="Prometheus metrics",
)
def metrics(engine: EngineDep) -> Response:
    registry = CollectorRegistry()
    registry.register(QueueCollector(engine))
    body = generate_latest(registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
