"""The pure lifecycle state machine, event by event, state by state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from smartthumb.operator.lifecycle import (
    DeleteArtifacts,
    DeliverWebhook,
    Expire,
    Interrupted,
    InvalidTransition,
    LifecyclePolicy,
    RunnerExited,
    RunRunner,
    Started,
    Tick,
    WebhookResponse,
    decide,
    retry_delay_s,
)
from smartthumb.operator.models import Job, JobState, RunOutcome, WebhookDelivery
from smartthumb.runner.spec import Mode, OutputFormat, OutputReport, RunResult, ThumbnailSpec

T0 = datetime(2025, 1, 1, tzinfo=UTC)
POLICY = LifecyclePolicy(ttl_s=100, webhook_max_attempts=3, webhook_backoff_s=10)
RESULT = RunResult(
    mode=Mode.resize,
    method="resize",
    output=OutputReport(format=OutputFormat.jpeg, width=200, height=200, bytes=1000),
)


def make_job(webhook: bool = False) -> Job:
    return Job(
        id="job1",
        spec=ThumbnailSpec(mode="resize", width=200, height=200),
        input_names=["a.jpg"],
        created_at=T0,
        webhook=WebhookDelivery(
            enabled=webhook, url="https://example.com/hook" if webhook else None
        ),
    )


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def running(webhook: bool = False) -> Job:
    return decide(make_job(webhook), Started(), at(1), POLICY).job


def exited(job: Job, outcome: RunOutcome, **kwargs) -> tuple[Job, list]:
    transition = decide(job, RunnerExited(outcome=outcome, **kwargs), at(2), POLICY)
    return transition.job, transition.actions


def test_start_runs_the_main_runner():
    transition = decide(make_job(), Started(), at(1), POLICY)
    assert transition.state is JobState.running
    assert transition.actions == [RunRunner(fallback=False, reason=None)]
    assert transition.job.started_at == at(1)
    assert [run.fallback for run in transition.job.runs] == [False]


def test_decide_does_not_mutate_its_input():
    job = make_job()
    decide(job, Started(), at(1), POLICY)
    assert job.state is JobState.queued and job.runs == []


def test_ok_is_done_with_the_result_and_a_ttl():
    job, actions = exited(running(), RunOutcome.ok, result=RESULT)
    assert job.state is JobState.done and job.result == RESULT and job.error is None
    assert job.finished_at == at(2) and job.expires_at == at(102)
    assert actions == []
    assert job.runs[0].outcome is RunOutcome.ok


def test_ok_without_a_result_fails():
    job, _ = exited(running(), RunOutcome.ok)
    assert job.state is JobState.failed and "no result" in job.error


def test_oom_on_the_main_runner_retries_once_with_the_fallback():
    job, actions = exited(running(), RunOutcome.oom, message="killed by signal 9")
    assert job.state is JobState.running
    assert job.fallback_reason == "the main runner ran out of memory (killed by signal 9)"
    assert actions == [RunRunner(fallback=True, reason=job.fallback_reason)]
    assert [(run.fallback, run.outcome) for run in job.runs] == [
        (False, RunOutcome.oom),
        (True, None),
    ]
    done = decide(job, RunnerExited(outcome=RunOutcome.ok, result=RESULT), at(3), POLICY).job
    assert done.state is JobState.done
    assert done.result.fallback_used is True
    assert done.result.worker_warning == job.fallback_reason


def test_oom_on_the_fallback_fails_with_a_clear_error():
    job, _ = exited(running(), RunOutcome.oom, message="MemoryError")
    transition = decide(job, RunnerExited(outcome=RunOutcome.oom, message="killed"), at(3), POLICY)
    assert transition.state is JobState.failed
    assert transition.actions == []
    assert "main runner and the light fallback both ran out" in transition.job.error


@pytest.mark.parametrize(
    ("outcome", "message", "error"),
    [
        (RunOutcome.bad_input, "cannot identify image a.jpg", "cannot identify image a.jpg"),
        (RunOutcome.bad_input, None, "the input is unusable"),
        (
            RunOutcome.internal,
            "ZeroDivisionError",
            "internal error in the runner (ZeroDivisionError)",
        ),
        (RunOutcome.timeout, "no result within 1800 s", "timed out (no result within 1800 s)"),
    ],
)
def test_other_failures_are_final_without_fallback(outcome, message, error):
    job, actions = exited(running(), outcome, message=message)
    assert job.state is JobState.failed and job.error == error
    assert not any(isinstance(action, RunRunner) for action in actions)
    assert job.fallback_reason is None


def test_a_failure_of_the_fallback_other_than_oom_is_final():
    job, _ = exited(running(), RunOutcome.oom)
    failed = decide(job, RunnerExited(outcome=RunOutcome.bad_input, message="bad"), at(3), POLICY)
    assert failed.state is JobState.failed and failed.job.error == "bad"


def test_interrupted_requeues_and_a_restart_resumes_the_fallback():
    job, _ = exited(running(), RunOutcome.oom)
    queued = decide(job, Interrupted(reason="engine stopped"), at(3), POLICY).job
    assert queued.state is JobState.queued
    assert queued.runs[-1].outcome is RunOutcome.interrupted
    restarted = decide(queued, Started(), at(4), POLICY)
    assert restarted.actions == [RunRunner(fallback=True, reason=job.fallback_reason)]


def test_interrupting_a_queued_job_changes_nothing():
    job = make_job()
    assert decide(job, Interrupted(reason="x"), at(1), POLICY).job == job


def test_runner_exit_reported_as_interrupted_requeues():
    job, _ = exited(running(), RunOutcome.interrupted, message="stopped")
    assert job.state is JobState.queued


@pytest.mark.parametrize(
    "state", [JobState.running, JobState.done, JobState.failed, JobState.expired]
)
def test_only_a_queued_job_starts(state):
    with pytest.raises(InvalidTransition):
        decide(make_job().model_copy(update={"state": state}), Started(), at(1), POLICY)


@pytest.mark.parametrize(
    "state", [JobState.queued, JobState.done, JobState.failed, JobState.expired]
)
def test_only_a_running_job_exits(state):
    job = make_job().model_copy(update={"state": state})
    with pytest.raises(InvalidTransition):
        decide(job, RunnerExited(outcome=RunOutcome.ok, result=RESULT), at(1), POLICY)


@pytest.mark.parametrize("state", [JobState.done, JobState.failed, JobState.expired])
def test_a_finished_job_cannot_be_interrupted(state):
    with pytest.raises(InvalidTransition):
        decide(
            make_job().model_copy(update={"state": state}), Interrupted(reason="x"), at(1), POLICY
        )


@pytest.mark.parametrize("outcome", [RunOutcome.ok, RunOutcome.bad_input])
def test_finishing_makes_the_webhook_due_now(outcome):
    job, actions = exited(running(webhook=True), outcome, result=RESULT)
    assert actions == [DeliverWebhook(at=at(2))]
    assert job.webhook.next_attempt_at == at(2)


def finished_with_webhook() -> Job:
    return exited(running(webhook=True), RunOutcome.ok, result=RESULT)[0]


def answer(job: Job, now: float = 3, **kwargs):
    return decide(job, WebhookResponse(**kwargs), at(now), POLICY)


@pytest.mark.parametrize("code", [200, 201, 204, 299])
def test_2xx_delivers(code):
    transition = answer(finished_with_webhook(), status_code=code)
    delivery = transition.job.webhook
    assert delivery.delivered and delivery.attempts == 1 and delivery.last_status_code == code
    assert delivery.next_attempt_at is None and transition.actions == []


@pytest.mark.parametrize("code", [301, 302, 307, 400, 404, 500])
def test_other_codes_retry_with_backoff(code):
    transition = answer(finished_with_webhook(), status_code=code)
    delivery = transition.job.webhook
    assert not delivery.delivered and delivery.last_status_code == code
    assert delivery.last_error.startswith(f"HTTP {code}")
    due = delivery.next_attempt_at
    assert at(3 + 8) <= due <= at(3 + 12)  # 10 s +- 20 % jitter
    assert transition.actions == [DeliverWebhook(at=due)]


def test_a_redirect_is_reported_as_not_followed():
    assert (
        "redirects are not followed"
        in answer(finished_with_webhook(), status_code=302).job.webhook.last_error
    )


def test_410_stops():
    transition = answer(finished_with_webhook(), status_code=410)
    assert transition.job.webhook.next_attempt_at is None and transition.actions == []
    assert "410" in transition.job.webhook.last_error and not transition.job.webhook.delivered


def test_a_permanent_error_stops():
    transition = answer(finished_with_webhook(), error="address 10.0.0.1 refused", permanent=True)
    assert transition.job.webhook.next_attempt_at is None
    assert transition.job.webhook.last_error == "address 10.0.0.1 refused"
    assert transition.job.webhook.last_status_code is None


@pytest.mark.parametrize("code", [429, 503])
def test_retry_after_is_honoured_when_longer(code):
    transition = answer(finished_with_webhook(), status_code=code, retry_after_s=600)
    assert transition.job.webhook.next_attempt_at == at(603)


def test_retry_after_never_shortens_the_backoff_nor_applies_to_other_codes():
    assert answer(
        finished_with_webhook(), status_code=503, retry_after_s=1
    ).job.webhook.next_attempt_at > at(10)
    assert answer(
        finished_with_webhook(), status_code=500, retry_after_s=600
    ).job.webhook.next_attempt_at < at(20)


def test_retry_after_is_capped():
    policy = POLICY.model_copy(update={"webhook_backoff_max_s": 60})
    transition = decide(
        finished_with_webhook(), WebhookResponse(status_code=429, retry_after_s=9999), at(3), policy
    )
    assert transition.job.webhook.next_attempt_at == at(63)


def test_gives_up_after_max_attempts():
    job = finished_with_webhook()
    for attempt in range(1, POLICY.webhook_max_attempts + 1):
        transition = answer(job, now=attempt * 1000, error="connection refused")
        job = transition.job
    assert job.webhook.attempts == 3 and job.webhook.next_attempt_at is None
    assert job.webhook.last_error == "connection refused; gave up after 3 attempts"
    assert transition.actions == []


def test_backoff_grows_exponentially_with_bounded_jitter():
    delays = [retry_delay_s("job1", attempt, POLICY) for attempt in range(1, 6)]
    for attempt, delay in enumerate(delays, start=1):
        nominal = 10 * 4 ** (attempt - 1)
        assert 0.8 * nominal <= delay <= 1.2 * nominal
    assert retry_delay_s("job1", 2, POLICY) == retry_delay_s("job1", 2, POLICY)
    assert len({retry_delay_s(f"job{i}", 1, POLICY) for i in range(20)}) == 20
    assert retry_delay_s("job1", 30, POLICY) <= POLICY.webhook_backoff_max_s * 1.2


@pytest.mark.parametrize("state", [JobState.queued, JobState.running, JobState.expired])
def test_webhook_answers_need_a_pending_delivery(state):
    job = make_job(webhook=True).model_copy(update={"state": state})
    with pytest.raises(InvalidTransition):
        answer(job, status_code=200)


def test_webhook_answer_after_delivery_is_invalid():
    with pytest.raises(InvalidTransition):
        answer(answer(finished_with_webhook(), status_code=200).job, status_code=200)


def test_tick_before_anything_is_due_does_nothing():
    job = finished_with_webhook()
    job = answer(job, status_code=500).job
    transition = decide(job, Tick(), at(4), POLICY)
    assert transition.job == job and transition.actions == []
    for state in (JobState.queued, JobState.running):
        idle = make_job().model_copy(update={"state": state})
        assert decide(idle, Tick(), at(10**6), POLICY).actions == []


def test_tick_makes_a_due_webhook_retry():
    job = answer(finished_with_webhook(), status_code=500).job
    transition = decide(job, Tick(), job.webhook.next_attempt_at, POLICY)
    assert transition.actions == [DeliverWebhook(at=job.webhook.next_attempt_at)]


@pytest.mark.parametrize("outcome", [RunOutcome.ok, RunOutcome.bad_input])
def test_tick_past_the_ttl_expires_and_deletes(outcome):
    job, _ = exited(running(), outcome, result=RESULT)
    assert decide(job, Tick(), at(101), POLICY).actions == []
    transition = decide(job, Tick(), at(102), POLICY)
    assert transition.state is JobState.expired
    assert transition.actions == [DeleteArtifacts(), Expire()]


def test_expiry_abandons_a_pending_webhook():
    job = answer(finished_with_webhook(), status_code=500).job
    expired = decide(job, Tick(), at(500), POLICY).job
    assert expired.webhook.next_attempt_at is None
    assert "expired before the webhook was delivered" in expired.webhook.last_error


def test_an_expired_job_still_there_is_deleted_again():
    # A backend that died between saving `expired` and deleting the row meets it again.
    job, _ = exited(running(), RunOutcome.ok, result=RESULT)
    expired = decide(job, Tick(), at(200), POLICY).job
    again = decide(expired, Tick(), at(300), POLICY)
    assert again.state is JobState.expired
    assert again.actions == [DeleteArtifacts(), Expire()]
