"""The ThumbnailJob status holds everything the state machine needs: a job written to it and
read back is the same job, at every step of its life (so any replica, or a restarted
operator, carries on from the API alone). And the operator's settings fail in one line."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from smartthumb.operator.kube.convert import API_URL, events, job_from_resource, status_from_job
from smartthumb.operator.lifecycle import (
    Event,
    Interrupted,
    LifecyclePolicy,
    RunnerExited,
    Started,
    Tick,
    WebhookResponse,
    decide,
)
from smartthumb.operator.models import JobState, RunOutcome
from smartthumb.operator.webhooks import payload
from smartthumb.runner.spec import Mode, OutputFormat, OutputReport, RunResult

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = LifecyclePolicy(ttl_s=60)
RESULT = RunResult(
    mode=Mode.crop,
    method="crop:face",
    output=OutputReport(format=OutputFormat.webp, width=300, height=200, bytes=4321),
    selected=[0],
)


def resource() -> dict[str, Any]:
    return {
        "metadata": {
            "name": "cover",
            "namespace": "shop",
            "uid": "u-1",
            "generation": 1,
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": {
            "sources": [{"path": "in/a.jpg"}],
            "mode": "crop",
            "width": 300,
            "height": 200,
            "format": "webp",
            "resources": {"memory": "256Mi", "maxMemory": "1Gi"},
            "webhook": {"url": "https://example.com/hook"},
        },
    }


def test_every_step_round_trips_through_the_status() -> None:
    obj = resource()
    job = job_from_resource(obj)
    steps: list[Event] = [
        Started(attempt=1),
        RunnerExited(attempt=1, outcome=RunOutcome.oom, message="OOMKilled"),
        Interrupted(attempt=2, reason="preempted", replaced_by_backend="cover-2-x"),
        RunnerExited(attempt=2, outcome=RunOutcome.oom, message="OOMKilled"),
        RunnerExited(attempt=3, outcome=RunOutcome.oom, message="OOMKilled"),
        RunnerExited(attempt=4, outcome=RunOutcome.ok, result=RESULT),
        WebhookResponse(attempt=1, status_code=503),
        WebhookResponse(attempt=2, status_code=200),
        Tick(),
    ]
    told = []
    for index, event in enumerate(steps, start=1):
        moment = T0 + timedelta(seconds=index if not isinstance(event, Tick) else 1000)
        transition = decide(job, event, moment, POLICY)
        assert transition.changed, event
        told += events(job, transition.job)
        obj = {**obj, "status": status_from_job(transition.job, obj, moment)}
        job = job_from_resource(obj)
        assert job == transition.job, event
    assert [run.memory_mb for run in job.runs] == [256, 512, 1024, 256]
    assert job.runs[-1].fallback and job.result is not None and job.result.fallback_used
    assert job.state is JobState.expired
    status = obj["status"]
    assert status["result"]["output"] == "smartthumb/shop/cover/thumbnail.webp"
    assert [a["jobName"] for a in status["attempts"]] == [f"cover-{n}" for n in (1, 2, 3, 4)]
    assert [reason for _, reason, _ in told] == [
        "Started",
        "OOMKilled",
        "RetryingWithMoreMemory",
        "PodDisrupted",
        "OOMKilled",
        "RetryingWithMoreMemory",
        "OOMKilled",
        "FallingBack",
        "Succeeded",
        "WebhookFailed",
        "WebhookDelivered",
        "Expired",
    ]


def test_the_webhook_links_start_where_the_job_was_submitted() -> None:
    """The API records its address in an annotation; a ThumbnailJob applied with kubectl has
    none, and its webhook links fall back to the operator's SMARTTHUMB_PUBLIC_URL."""
    applied = job_from_resource(resource())
    assert applied.api_url is None
    assert payload(applied, "https://thumbs.example.com")["job_url"] == (
        "https://thumbs.example.com/job/cover"
    )
    obj = resource()
    obj["metadata"]["annotations"] = {API_URL: "http://10.1.2.3:8080"}
    submitted = job_from_resource(obj)
    assert submitted.api_url == "http://10.1.2.3:8080"
    assert payload(submitted, "https://thumbs.example.com")["job_url"] == (
        "http://10.1.2.3:8080/job/cover"
    )
    assert payload(applied, None)["job_url"] is None


def test_a_condition_keeps_its_transition_time_while_its_status_holds() -> None:
    obj = resource()
    job = decide(job_from_resource(obj), Started(attempt=1), T0, POLICY).job
    obj["status"] = status_from_job(job, obj, T0)
    later = status_from_job(job, obj, T0 + timedelta(minutes=5))
    admitted = {c["type"]: c for c in later["conditions"]}["Admitted"]
    assert admitted["lastTransitionTime"] == "2026-01-01T00:00:00Z"


def test_the_console_script_refuses_bad_settings_in_one_line() -> None:
    script = Path(sys.executable).with_name("smartthumb-operator")
    env = {
        "PATH": "/usr/bin:/bin",
        "SMARTTHUMB_VOLUME_CLAIM": "thumbs",
        "SMARTTHUMB_MAX_RUNNING": "0",
    }
    out = subprocess.run(  # check=False: the exit code is the point
        [str(script)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "max_running" in out.stderr and "greater than or equal to 1" in out.stderr
    env = {"PATH": "/usr/bin:/bin"}
    out = subprocess.run(  # check=False: the exit code is the point
        [str(script)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 2 and "SMARTTHUMB_VOLUME_CLAIM" in out.stderr
