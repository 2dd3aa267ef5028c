"""The operator's Prometheus metrics: the lifecycle's (shared with local mode) plus its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from smartthumb.operator.metrics import Metrics


class OperatorMetrics(Metrics):
    """On a registry of its own: several operators may run in one process (tests)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry or CollectorRegistry())
        self.reconcile_seconds = Histogram(
            "smartthumb_reconcile_seconds",
            "Read, decide and write of one ThumbnailJob event.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.accepted = Counter(
            "smartthumb_thumbnailjobs_accepted", "ThumbnailJobs queued.", registry=self.registry
        )
        self.expired = Counter(
            "smartthumb_thumbnailjobs_expired",
            "ThumbnailJobs deleted at their TTL.",
            registry=self.registry,
        )
        self.runner_jobs = Counter(
            "smartthumb_runner_jobs_created",
            "Runner Jobs created, main or fallback.",
            ["runner"],
            registry=self.registry,
        )
