"""How a runner Job ended, read from its batch/v1 Job and pod status: the Kubernetes twin of
the local engine's exit-code classifier. Pure functions over the API's JSON (dicts).

The traps it knows (see shared notes): an OOM kill is `OOMKilled` or, with some runtimes,
`Error` + exit 137; a 137 with a `DisruptionTarget` condition is a preemption or eviction,
not memory; a pod can "succeed" after a child process was OOM-killed (kubernetes#104454),
so a success counts only with the runner's result in the termination message.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError
from smartthumb.operator.lifecycle import Interrupted, RunnerExited
from smartthumb.operator.models import RunOutcome
from smartthumb.runner.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_OUT_OF_MEMORY
from smartthumb.runner.spec import RunResult

RUNNER_CONTAINER = "runner"
SIGKILL_EXIT = 137
DISRUPTION_REASONS = frozenset({"Evicted", "Preempting", "DeletionByTaintManager", "NodeLost"})

Obj = dict[str, Any]


def _condition(obj: Obj, kind: str) -> Obj | None:
    conditions: list[Obj] = obj.get("status", {}).get("conditions") or []
    for condition in conditions:
        if condition.get("type") == kind and condition.get("status") == "True":
            return condition
    return None


def job_finished(job: Obj) -> bool:
    """True once the Job controller has finished the Job (Complete or Failed)."""
    return _condition(job, "Complete") is not None or _condition(job, "Failed") is not None


def disruption(pod: Obj) -> str | None:
    """Why the pod was disrupted (preempted, evicted, its node lost), or None."""
    condition = _condition(pod, "DisruptionTarget")
    if condition is not None:
        reason = condition.get("reason") or "DisruptionTarget"
        message = condition.get("message")
        return f"{reason}: {message}" if message else reason
    status = pod.get("status", {})
    if status.get("phase") == "Failed" and status.get("reason") in DISRUPTION_REASONS:
        return f"{status['reason']}: {status.get('message', '')}".rstrip(": ")
    return None


def _terminated(pod: Obj) -> Obj | None:
    """The runner container's terminated state (lastState if it restarted)."""
    for status in pod.get("status", {}).get("containerStatuses") or []:
        if status.get("name") != RUNNER_CONTAINER:
            continue
        return (status.get("state") or {}).get("terminated") or (status.get("lastState") or {}).get(
            "terminated"
        )
    return None


def _memory_limit(pod: Obj) -> str | None:
    for container in pod.get("spec", {}).get("containers") or []:
        if container.get("name") == RUNNER_CONTAINER:
            return ((container.get("resources") or {}).get("limits") or {}).get("memory")
    return None


def _termination_document(terminated: Obj) -> Obj | None:
    try:
        document = json.loads(terminated.get("message") or "")
    except json.JSONDecodeError:
        return None
    return document if isinstance(document, dict) else None


def disrupted_pods(pods: list[Obj]) -> dict[str, str]:
    """Pods that ended because of a disruption (the Job replaces them in place): name -> why."""
    found = {}
    for pod in pods:
        why = disruption(pod)
        ended = pod.get("status", {}).get("phase") in ("Failed", "Succeeded")
        if why is not None and (ended or pod["metadata"].get("deletionTimestamp")):
            found[pod["metadata"]["name"]] = why
    return found


def _deciding_pod(pods: list[Obj]) -> Obj | None:
    """The newest pod that ran to its end without being disrupted."""
    ended = [pod for pod in pods if disruption(pod) is None and _terminated(pod) is not None]
    ended.sort(key=lambda pod: pod["metadata"].get("creationTimestamp") or "")
    return ended[-1] if ended else None


def classify_pod(pod: Obj, attempt: int) -> RunnerExited:
    """How the runner in this ended pod finished."""
    terminated = _terminated(pod) or {}
    exit_code = terminated.get("exitCode")
    document = _termination_document(terminated)
    error = str(document["error"]) if document and "error" in document else None
    limit = _memory_limit(pod)
    at_limit = f" at the {limit} memory limit" if limit else ""
    exited = RunnerExited(attempt=attempt, outcome=RunOutcome.internal)
    if terminated.get("reason") == "OOMKilled" or exit_code == SIGKILL_EXIT:
        how = "OOMKilled" if terminated.get("reason") == "OOMKilled" else "killed (exit 137)"
        return exited.model_copy(
            update={"outcome": RunOutcome.oom, "message": f"{how} by the kernel{at_limit}"}
        )
    if exit_code == EXIT_OUT_OF_MEMORY:
        message = f"{error or 'out of memory'}{at_limit}"
        return exited.model_copy(update={"outcome": RunOutcome.oom, "message": message})
    if exit_code == EXIT_BAD_INPUT:
        return exited.model_copy(
            update={"outcome": RunOutcome.bad_input, "message": error or "bad input"}
        )
    if exit_code == EXIT_OK:
        try:
            result = RunResult.model_validate(document)
        except ValidationError:
            return exited.model_copy(
                update={
                    "message": "the pod succeeded but its termination message holds no "
                    "runner result (was a process of it killed?)"
                }
            )
        return exited.model_copy(update={"outcome": RunOutcome.ok, "result": result})
    reason = terminated.get("reason") or "Error"
    return exited.model_copy(update={"message": error or f"{reason}, exit code {exit_code}"})


def classify_job(job: Obj, pods: list[Obj], attempt: int) -> RunnerExited | None:
    """How a finished runner Job ended; None while it has not finished."""
    if not job_finished(job):
        return None
    failed = _condition(job, "Failed")
    if failed is not None and failed.get("reason") == "DeadlineExceeded":
        deadline = job.get("spec", {}).get("activeDeadlineSeconds")
        message = f"the runner did not finish within {deadline} s (activeDeadlineSeconds)"
        return RunnerExited(attempt=attempt, outcome=RunOutcome.timeout, message=message)
    pod = _deciding_pod(pods)
    if pod is not None:
        return classify_pod(pod, attempt)
    if failed is not None:
        message = failed.get("message") or failed.get("reason") or "the Job failed"
        return RunnerExited(
            attempt=attempt,
            outcome=RunOutcome.internal,
            message=f"the Job failed with no pod left to read: {message}",
        )
    return RunnerExited(
        attempt=attempt,
        outcome=RunOutcome.internal,
        message="the Job completed with no pod left to read",
    )


def interruptions(pods: list[Obj], attempt: int) -> list[Interrupted]:
    """One Interrupted event per disrupted pod (the Job replaces each in place)."""
    return [
        Interrupted(reason=f"pod {name} {why}", attempt=attempt, replaced_by_backend=name)
        for name, why in sorted(disrupted_pods(pods).items())
    ]
