"""The lifecycle metrics count what happened once, however often a backend reports it."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from smartthumb.operator.lifecycle import Event, Started, WebhookResponse, decide
from smartthumb.operator.metrics import Metrics
from smartthumb.operator.models import Job, RunOutcome
from test_lifecycle import POLICY, at, ended, make_job


def apply_twice(metrics: Metrics, job: Job, event: Event, now: float) -> Job:
    for _ in range(2):
        transition = decide(job, event, at(now), POLICY)
        metrics.observe(job, event, transition)
        job = transition.job
    return job


def test_a_repeated_event_is_counted_once():
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    job = apply_twice(metrics, make_job(webhook=True), Started(), 1)
    job = apply_twice(metrics, job, ended(1, RunOutcome.oom), 2)
    job = apply_twice(metrics, job, ended(2), 3)
    apply_twice(metrics, job, WebhookResponse(attempt=1, status_code=200), 4)

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert sample("smartthumb_runner_out_of_memory_total", runner="main") == 1
    assert sample("smartthumb_fallbacks_total") == 1
    assert sample("smartthumb_jobs_finished_total", state="done") == 1
    assert sample("smartthumb_webhook_deliveries_total", outcome="delivered") == 1
