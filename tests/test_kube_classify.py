"""How a runner Job ended, read from pod and Job status as the API server serves them (the
shapes below are what kubelets write; the cluster tests see the same through kwok)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from smartthumb.operator.kube.classify import classify_job, classify_pod, interruptions
from smartthumb.operator.models import RunOutcome
from smartthumb.runner.spec import Mode, OutputFormat, OutputReport, RunResult

RESULT = RunResult(
    mode=Mode.fit,
    method="fit",
    output=OutputReport(format=OutputFormat.jpeg, width=10, height=10, bytes=99),
)


def pod(
    exit_code: int | None = 0,
    reason: str = "Completed",
    message: str = "",
    *,
    phase: str = "Failed",
    conditions: list[dict[str, Any]] | None = None,
    name: str = "thumb-1-abcde",
    created: str = "2026-01-01T00:00:00Z",
    last_state: bool = False,
) -> dict[str, Any]:
    terminated = {"exitCode": exit_code, "reason": reason, "message": message}
    container: dict[str, Any] = {"name": "runner", "state": {"terminated": terminated}}
    if last_state:
        container = {"name": "runner", "state": {"waiting": {}}, "lastState": container["state"]}
    return {
        "metadata": {"name": name, "creationTimestamp": created},
        "spec": {"containers": [{"name": "runner", "resources": {"limits": {"memory": "512Mi"}}}]},
        "status": {
            "phase": phase,
            "conditions": conditions or [],
            "containerStatuses": [container],
        },
    }


DISRUPTED = [{"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler"}]


def job(kind: str = "Complete", reason: str | None = None) -> dict[str, Any]:
    condition = {"type": kind, "status": "True", "reason": reason}
    return {"spec": {"activeDeadlineSeconds": 30}, "status": {"conditions": [condition]}}


def test_a_success_with_its_result_is_ok() -> None:
    exited = classify_pod(pod(0, message=RESULT.model_dump_json(), phase="Succeeded"), 2)
    assert (exited.outcome, exited.attempt, exited.result) == (RunOutcome.ok, 2, RESULT)


@pytest.mark.parametrize("message", ["", "not json", '{"mode": "fit"}', '["a list"]'])
def test_a_success_without_a_result_is_not_ok(message: str) -> None:
    # kubernetes#104454: a child process OOM-killed, PID 1 exits 0.
    exited = classify_pod(pod(0, message=message, phase="Succeeded"), 1)
    assert exited.outcome is RunOutcome.internal and "no runner result" in exited.message


@pytest.mark.parametrize(("code", "reason"), [(137, "OOMKilled"), (137, "Error"), (0, "OOMKilled")])
def test_oomkilled_or_137_without_a_disruption_is_out_of_memory(code: int, reason: str) -> None:
    exited = classify_pod(pod(code, reason), 1)
    assert exited.outcome is RunOutcome.oom
    assert "at the 512Mi memory limit" in exited.message


def test_the_last_state_counts_when_the_container_restarted() -> None:
    assert classify_pod(pod(137, "OOMKilled", last_state=True), 1).outcome is RunOutcome.oom


def test_the_runners_own_exit_codes() -> None:
    bad = classify_pod(pod(2, "Error", json.dumps({"error": "a.jpg: truncated"})), 1)
    assert (bad.outcome, bad.message) == (RunOutcome.bad_input, "a.jpg: truncated")
    memory = classify_pod(pod(3, "Error", json.dumps({"error": "out of memory"})), 1)
    assert memory.outcome is RunOutcome.oom
    crash = classify_pod(pod(1, "Error", json.dumps({"error": "internal error: KeyError"})), 1)
    assert (crash.outcome, crash.message) == (RunOutcome.internal, "internal error: KeyError")
    odd = classify_pod(pod(42, "Error"), 1)
    assert odd.outcome is RunOutcome.internal and "exit code 42" in odd.message


def test_a_137_with_a_disruption_is_an_interruption_not_memory() -> None:
    preempted = pod(137, "Error", conditions=DISRUPTED)
    [event] = interruptions([preempted], 3)
    assert (event.attempt, event.replaced_by_backend) == (3, "thumb-1-abcde")
    assert "PreemptionByScheduler" in event.reason
    # The Job ends on its replacement pod, never on the disrupted one.
    replacement = pod(
        0,
        message=RESULT.model_dump_json(),
        phase="Succeeded",
        name="thumb-1-b",
        created="2026-01-01T00:00:05Z",
    )
    assert classify_job(job(), [preempted, replacement], 3).outcome is RunOutcome.ok


def test_an_evicted_pod_is_an_interruption() -> None:
    evicted = pod(137, "ContainerStatusUnknown")
    evicted["status"]["reason"] = "Evicted"
    assert [e.replaced_by_backend for e in interruptions([evicted], 1)] == ["thumb-1-abcde"]


def test_the_deadline_is_read_from_the_job() -> None:
    exited = classify_job(job("Failed", "DeadlineExceeded"), [], 1)
    assert exited.outcome is RunOutcome.timeout and "30 s" in exited.message


def test_a_failed_job_without_pods_is_an_internal_error() -> None:
    exited = classify_job(job("Failed", "BackoffLimitExceeded"), [], 1)
    assert exited.outcome is RunOutcome.internal and "no pod" in exited.message


def test_an_unfinished_job_has_no_outcome() -> None:
    assert classify_job({"status": {"active": 1}}, [pod(137, "OOMKilled")], 1) is None
