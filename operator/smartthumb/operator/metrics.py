"""Prometheus metrics of the job lifecycle (no per-job labels: cardinality stays fixed)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from smartthumb.operator.lifecycle import (
    Event,
    RunnerExited,
    RunRunner,
    Transition,
    WebhookResponse,
)
from smartthumb.operator.models import Job, QueueStats, RunOutcome


class _QueueCollector(Collector):
    """Queue depth and running jobs, read from the backend at scrape time."""

    def __init__(self) -> None:
        self.stats: Callable[[], QueueStats] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self.stats is None:
            return
        stats = self.stats()
        yield GaugeMetricFamily("smartthumb_queue_depth", "Jobs waiting to run.", stats.queued)
        yield GaugeMetricFamily("smartthumb_jobs_running", "Jobs running now.", stats.running)
        yield GaugeMetricFamily("smartthumb_queue_capacity", "Most queued jobs.", stats.capacity)


class Metrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        self.jobs_finished = Counter(
            "smartthumb_jobs_finished", "Jobs by final state.", ["state"], registry=registry
        )
        self.job_duration = Histogram(
            "smartthumb_job_duration_seconds",
            "From a worker taking the job to its final state.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
            registry=registry,
        )
        self.out_of_memory = Counter(
            "smartthumb_runner_out_of_memory",
            "Runner processes that ran out of memory, main or fallback.",
            ["runner"],
            registry=registry,
        )
        self.runs = Counter(
            "smartthumb_runner_runs",
            "Runner runs that ended, by outcome (ok, oom, bad_input, timeout, ...).",
            ["outcome"],
            registry=registry,
        )
        self.fallbacks = Counter(
            "smartthumb_fallbacks", "Light fallback runs after an out-of-memory.", registry=registry
        )
        self.webhook_attempts = Counter(
            "smartthumb_webhook_deliveries",
            "Webhook POSTs by outcome: delivered, retrying, abandoned.",
            ["outcome"],
            registry=registry,
        )
        self._queue = _QueueCollector()
        registry.register(self._queue)

    def watch(self, stats: Callable[[], QueueStats]) -> None:
        """Report this backend's queue in the gauges."""
        self._queue.stats = stats

    def observe(self, before: Job, event: Event, transition: Transition) -> None:
        # A stale or repeated event is a no-op: counting it would count one OOM or POST twice.
        if not transition.changed:
            return
        after = transition.job
        if after.state.finished and not before.state.finished:
            self.jobs_finished.labels(after.state.value).inc()
            if after.started_at and after.finished_at:
                self.job_duration.observe((after.finished_at - after.started_at).total_seconds())
        if isinstance(event, RunnerExited):
            self.runs.labels(event.outcome.value).inc()
        if isinstance(event, RunnerExited) and event.outcome is RunOutcome.oom:
            self.out_of_memory.labels("fallback" if before.fallback_reason else "main").inc()
        if isinstance(event, RunnerExited) and any(
            isinstance(action, RunRunner) and action.fallback for action in transition.actions
        ):
            self.fallbacks.inc()
        if isinstance(event, WebhookResponse):
            delivery = after.webhook
            outcome = (
                "delivered"
                if delivery.delivered
                else "retrying"
                if delivery.next_attempt_at
                else "abandoned"
            )
            self.webhook_attempts.labels(outcome).inc()


METRICS = Metrics()
"""The process-wide metrics on prometheus_client's default registry (what /metrics serves)."""
