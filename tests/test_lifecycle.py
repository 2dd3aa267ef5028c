"""The pure lifecycle state machine, event by event, state by state, and under reconciliation:
events repeated, late and out of order."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from smartthumb.operator.lifecycle import (
    Action,
    Cancelled,
    DeleteArtifacts,
    DeliverWebhook,
    Event,
    Expire,
    Interrupted,
    LifecyclePolicy,
    Rejected,
    RunnerExited,
    RunRunner,
    Started,
    StopRunner,
    Tick,
    WebhookResponse,
    current_run,
    decide,
    retry_delay_s,
)
from smartthumb.operator.models import (
    FailureReason,
    Job,
    JobState,
    MemoryPlan,
    RunOutcome,
    WebhookDelivery,
)
from smartthumb.runner.spec import Mode, OutputFormat, OutputReport, RunResult, ThumbnailSpec

T0 = datetime(2025, 1, 1, tzinfo=UTC)
POLICY = LifecyclePolicy(ttl_s=100, webhook_max_attempts=3, webhook_backoff_s=10)
LADDER = MemoryPlan(main_mb=512, fallback_mb=256, max_mb=2048)
RESULT = RunResult(
    mode=Mode.resize,
    method="resize",
    output=OutputReport(format=OutputFormat.jpeg, width=200, height=200, bytes=1000),
)


def make_job(webhook: bool = False, memory: MemoryPlan | None = None) -> Job:
    return Job(
        id="job1",
        spec=ThumbnailSpec(mode="resize", width=200, height=200),
        input_names=["a.jpg"],
        created_at=T0,
        webhook=WebhookDelivery(
            enabled=webhook, url="https://example.com/hook" if webhook else None
        ),
        memory=memory,
    )


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def running(webhook: bool = False, memory: MemoryPlan | None = None) -> Job:
    return decide(make_job(webhook, memory), Started(), at(1), POLICY).job


def ended(attempt: int, outcome: RunOutcome = RunOutcome.ok, **kwargs: Any) -> RunnerExited:
    """Run `attempt` ended; an ok one carries RESULT unless told otherwise."""
    result = kwargs.pop("result", RESULT if outcome is RunOutcome.ok else None)
    return RunnerExited(attempt=attempt, outcome=outcome, result=result, **kwargs)


def exited(
    job: Job, outcome: RunOutcome, now: float = 2, **kwargs: Any
) -> tuple[Job, list[Action]]:
    """The current run of `job` ended with `outcome` at `now`."""
    run = current_run(job)
    assert run is not None, "no run in progress"
    event = RunnerExited(attempt=run.attempt, outcome=outcome, **kwargs)
    transition = decide(job, event, at(now), POLICY)
    return transition.job, transition.actions


def assert_no_op(job: Job, event: Event, now: float = 50) -> None:
    transition = decide(job, event, at(now), POLICY)
    assert transition.job == job
    assert transition.actions == []
    assert transition.changed is False


def ladder(memory: MemoryPlan | None, ooms: int) -> tuple[Job, list[Action]]:
    """A job whose first `ooms` runs ran out of memory, and every run it asked for."""
    transition = decide(make_job(memory=memory), Started(), at(1), POLICY)
    job, launched = transition.job, list(transition.actions)
    for second in range(2, 2 + ooms):
        job, actions = exited(job, RunOutcome.oom, now=second, message="killed by signal 9")
        launched += actions
    return job, launched


def test_start_runs_the_main_runner():
    transition = decide(make_job(), Started(), at(1), POLICY)
    assert transition.state is JobState.running and transition.changed
    assert transition.actions == [RunRunner(attempt=1, fallback=False, reason=None)]
    assert transition.job.started_at == at(1)
    assert [run.fallback for run in transition.job.runs] == [False]


def test_decide_does_not_mutate_its_input():
    job = make_job()
    decide(job, Started(), at(1), POLICY)
    assert job.state is JobState.queued and job.runs == []


def test_ok_is_done_with_the_result_and_a_ttl():
    job, actions = exited(running(), RunOutcome.ok, result=RESULT)
    assert job.state is JobState.done and job.result == RESULT and job.error is None
    assert job.failure is None
    assert job.finished_at == at(2) and job.expires_at == at(102)
    assert actions == []
    assert job.runs[0].outcome is RunOutcome.ok


# --- out of memory: the ladder, then the fallback --------------------------------------------


def test_without_a_memory_plan_oom_goes_straight_to_the_fallback():
    job, actions = exited(running(), RunOutcome.oom, message="killed by signal 9")
    assert job.state is JobState.running
    assert job.fallback_reason == "the main runner ran out of memory (killed by signal 9)"
    assert actions == [
        RunRunner(attempt=2, fallback=True, reason=job.fallback_reason, memory_mb=None)
    ]
    assert [(run.fallback, run.outcome) for run in job.runs] == [
        (False, RunOutcome.oom),
        (True, None),
    ]
    done, _ = exited(job, RunOutcome.ok, now=3, result=RESULT)
    assert done.state is JobState.done
    assert done.result.fallback_used is True
    assert done.result.worker_warning == job.fallback_reason


@pytest.mark.parametrize(
    ("plan", "main_limits"),
    [
        (LADDER, [512, 1024, 2048]),
        (MemoryPlan(main_mb=768, fallback_mb=256, max_mb=1024), [768, 1024]),
        (MemoryPlan(main_mb=512, fallback_mb=256, max_mb=1500), [512, 1024, 1500]),
        (MemoryPlan(main_mb=512, fallback_mb=256, max_mb=512), [512]),
    ],
)
def test_main_runs_double_their_memory_up_to_the_max_then_fall_back(plan, main_limits):
    job, launched = ladder(plan, ooms=len(main_limits))
    assert [(run.attempt, run.fallback, run.memory_mb) for run in launched] == [
        *((attempt, False, mb) for attempt, mb in enumerate(main_limits, start=1)),
        (len(main_limits) + 1, True, plan.fallback_mb),
    ]
    assert launched[-1].reason == job.fallback_reason
    assert [run.memory_mb for run in job.runs] == [*main_limits, plan.fallback_mb]


def test_no_fallback_reason_while_the_ladder_climbs():
    job, _ = ladder(LADDER, ooms=2)
    assert job.fallback_reason is None and not current_run(job).fallback


def test_the_fallback_after_the_ladder_makes_the_job_done():
    job, _ = ladder(LADDER, ooms=3)
    done, actions = exited(job, RunOutcome.ok, now=9, result=RESULT)
    assert done.state is JobState.done and done.failure is None and actions == []
    assert done.result.fallback_used is True
    assert done.result.worker_warning == job.fallback_reason
    assert [(run.fallback, run.memory_mb, run.outcome) for run in done.runs] == [
        (False, 512, RunOutcome.oom),
        (False, 1024, RunOutcome.oom),
        (False, 2048, RunOutcome.oom),
        (True, 256, RunOutcome.ok),
    ]


@pytest.mark.parametrize(("plan", "main_runs"), [(None, 1), (LADDER, 3)])
def test_oom_on_the_fallback_fails_with_a_clear_error(plan, main_runs):
    job, _ = ladder(plan, ooms=main_runs)
    assert current_run(job).fallback
    failed, actions = exited(job, RunOutcome.oom, now=9, message="killed")
    assert failed.state is JobState.failed and failed.failure is FailureReason.out_of_memory
    assert actions == []
    assert "main runner and the light fallback both ran out" in failed.error


@pytest.mark.parametrize("memory", [None, LADDER])
@pytest.mark.parametrize(
    ("outcome", "message", "error", "failure"),
    [
        (
            RunOutcome.bad_input,
            "cannot identify image a.jpg",
            "cannot identify image a.jpg",
            FailureReason.bad_input,
        ),
        (RunOutcome.bad_input, None, "the input is unusable", FailureReason.bad_input),
        (
            RunOutcome.internal,
            "ZeroDivisionError",
            "internal error in the runner (ZeroDivisionError)",
            FailureReason.runner_error,
        ),
        (
            RunOutcome.timeout,
            "no result within 1800 s",
            "timed out (no result within 1800 s)",
            FailureReason.deadline_exceeded,
        ),
        (RunOutcome.ok, None, "the runner reported no result", FailureReason.no_result),
    ],
)
def test_other_failures_are_final_without_retry_nor_fallback(
    memory, outcome, message, error, failure
):
    job, actions = exited(running(memory=memory), outcome, message=message)
    assert job.state is JobState.failed and job.error == error and job.failure is failure
    assert not any(isinstance(action, RunRunner) for action in actions)
    assert job.fallback_reason is None and len(job.runs) == 1


def test_a_failure_of_the_fallback_other_than_oom_is_final():
    job, _ = exited(running(), RunOutcome.oom)
    failed, actions = exited(job, RunOutcome.bad_input, now=3, message="bad")
    assert failed.state is JobState.failed and failed.error == "bad"
    assert failed.failure is FailureReason.bad_input and actions == []


# --- run identity: stale and repeated events are no-ops ---------------------------------------


def retried_after_oom() -> Job:
    return ladder(LADDER, ooms=1)[0]


def resumed_after_interruption() -> Job:
    queued = decide(running(), Interrupted(reason="evicted"), at(2), POLICY).job
    return decide(queued, Started(), at(3), POLICY).job


@pytest.mark.parametrize("second_run", [retried_after_oom, resumed_after_interruption])
def test_an_exit_of_an_earlier_run_is_a_no_op(second_run: Callable[[], Job]):
    job = second_run()
    run = current_run(job)
    assert run is not None and run.attempt == 2
    for outcome in RunOutcome:
        assert_no_op(job, ended(1, outcome))


@pytest.mark.parametrize("outcome", [RunOutcome.ok, RunOutcome.oom, RunOutcome.bad_input])
def test_a_repeated_exit_is_a_no_op(outcome):
    event = ended(1, outcome)
    assert_no_op(decide(running(), event, at(2), POLICY).job, event)


def test_an_exit_of_a_run_not_yet_started_is_a_no_op():
    assert_no_op(running(), ended(2))


def test_started_twice_is_a_no_op():
    assert_no_op(running(), Started())


def test_a_start_for_another_run_is_a_no_op():
    assert_no_op(make_job(), Started(attempt=2))
    queued = decide(running(), Interrupted(reason="evicted"), at(2), POLICY).job
    assert_no_op(queued, Started(attempt=1))  # the start of the interrupted run, late
    restarted = decide(queued, Started(attempt=2), at(3), POLICY)
    assert restarted.state is JobState.running and current_run(restarted.job).attempt == 2


def test_an_interruption_of_another_run_is_a_no_op():
    job = retried_after_oom()
    assert_no_op(job, Interrupted(reason="evicted", attempt=1))
    assert_no_op(job, Interrupted(reason="evicted", attempt=1, replaced_by_backend="pod-a"))


@pytest.mark.parametrize(
    "state", [JobState.running, JobState.done, JobState.failed, JobState.expired]
)
def test_only_a_queued_job_starts(state):
    assert_no_op(make_job().model_copy(update={"state": state}), Started())


@pytest.mark.parametrize(
    "state", [JobState.queued, JobState.done, JobState.failed, JobState.expired]
)
def test_only_a_running_job_exits(state):
    assert_no_op(make_job().model_copy(update={"state": state}), ended(1))


# --- interruptions ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plan", "ooms", "fallback", "memory_mb"),
    [
        (None, 0, False, None),
        (None, 1, True, None),
        (LADDER, 0, False, 512),
        (LADDER, 1, False, 1024),
        (LADDER, 3, True, 256),
    ],
)
def test_interrupted_requeues_and_a_restart_resumes_where_it_was(plan, ooms, fallback, memory_mb):
    job, _ = ladder(plan, ooms)
    queued = decide(job, Interrupted(reason="engine stopped"), at(8), POLICY).job
    assert queued.state is JobState.queued and queued.interruptions == 1
    assert queued.runs[-1].outcome is RunOutcome.interrupted
    restarted = decide(queued, Started(), at(9), POLICY)
    assert restarted.actions == [
        RunRunner(
            attempt=ooms + 2, fallback=fallback, reason=job.fallback_reason, memory_mb=memory_mb
        )
    ]
    assert restarted.job.started_at == at(1)  # when it first started


def test_interrupting_a_queued_job_changes_nothing():
    assert_no_op(make_job(), Interrupted(reason="x"))


def test_runner_exit_reported_as_interrupted_requeues():
    job, _ = exited(running(), RunOutcome.interrupted, message="stopped")
    assert job.state is JobState.queued and job.interruptions == 1
    assert job.runs[-1].outcome is RunOutcome.interrupted


def test_a_run_lost_with_its_fork_server_reruns_where_it_was_a_few_times_at_most():
    # What the local engine reports when its fork server dies under a run: not the job's doing.
    lost = "the runner's fork server died"
    job, _ = ladder(LADDER, 3)  # the light fallback runs
    for count in range(1, POLICY.max_interruptions + 2):
        report = ended(current_run(job).attempt, RunOutcome.interrupted, message=lost)
        job = decide(job, report, at(10 * count), POLICY).job
        assert_no_op(job, report)  # reported twice: counted once
        if job.state is JobState.queued:
            assert job.interruptions == count
            rerun = decide(job, Started(), at(10 * count + 1), POLICY)
            assert rerun.actions == [
                RunRunner(
                    attempt=len(job.runs) + 1,
                    fallback=True,
                    reason=job.fallback_reason,
                    memory_mb=LADDER.fallback_mb,
                )
            ]
            job = rerun.job
    assert job.state is JobState.failed and job.failure is FailureReason.interrupted
    assert job.error == f"interrupted {POLICY.max_interruptions + 1} times, the last time: {lost}"


@pytest.mark.parametrize("state", [JobState.done, JobState.failed, JobState.expired])
def test_a_finished_job_cannot_be_interrupted(state):
    assert_no_op(make_job().model_copy(update={"state": state}), Interrupted(reason="x"))


def test_a_disruption_replaced_in_place_counts_once_and_the_run_goes_on():
    evicted = Interrupted(reason="evicted", attempt=1, replaced_by_backend="pod-a")
    transition = decide(running(), evicted, at(2), POLICY)
    job = transition.job
    assert transition.changed and transition.actions == []
    assert job.state is JobState.running and job.interruptions == 1
    assert current_run(job).attempt == 1 and current_run(job).disrupted == ["pod-a"]
    assert_no_op(job, evicted)
    assert_no_op(job, evicted.model_copy(update={"attempt": None}))
    done, _ = exited(job, RunOutcome.ok, now=3, result=RESULT)
    assert done.state is JobState.done and done.runs[0].disrupted == ["pod-a"]


@pytest.mark.parametrize("in_place", [False, True])
def test_one_interruption_past_the_cap_fails_the_job_and_stops_its_run(in_place):
    job = make_job(webhook=True)
    for count in range(1, POLICY.max_interruptions + 2):
        if job.state is JobState.queued:
            job = decide(job, Started(), at(count), POLICY).job
        event = Interrupted(
            reason=f"evicted {count}",
            attempt=current_run(job).attempt,
            replaced_by_backend=f"pod-{count}" if in_place else None,
        )
        transition = decide(job, event, at(count), POLICY)
        job = transition.job
        assert job.interruptions == count
        if count <= POLICY.max_interruptions:
            assert job.state is (JobState.running if in_place else JobState.queued)
    last = POLICY.max_interruptions + 1
    assert job.state is JobState.failed and job.failure is FailureReason.interrupted
    assert job.error == f"interrupted {last} times, the last time: evicted {last}"
    assert transition.actions == [
        StopRunner(attempt=1 if in_place else last),
        DeliverWebhook(at=at(last)),
    ]
    assert job.runs[-1].outcome is RunOutcome.interrupted
    assert len(job.runs) == (1 if in_place else last)


# --- rejected before running ------------------------------------------------------------------


def test_a_rejected_job_fails_before_running():
    rejected = Rejected(reason=FailureReason.input_not_found, message="input 'a.jpg' is gone")
    transition = decide(make_job(webhook=True), rejected, at(1), POLICY)
    job = transition.job
    assert job.state is JobState.failed and job.failure is FailureReason.input_not_found
    assert job.error == "input 'a.jpg' is gone" and job.runs == [] and job.result is None
    assert job.finished_at == at(1) and job.expires_at == at(101)
    assert transition.actions == [DeliverWebhook(at=at(1))]


@pytest.mark.parametrize(
    "state", [JobState.running, JobState.done, JobState.failed, JobState.expired]
)
def test_only_a_queued_job_can_be_rejected(state):
    rejected = Rejected(reason=FailureReason.bad_input, message="no")
    assert_no_op(make_job().model_copy(update={"state": state}), rejected)


# --- webhooks ---------------------------------------------------------------------------------


@pytest.mark.parametrize("outcome", [RunOutcome.ok, RunOutcome.bad_input])
def test_finishing_makes_the_webhook_due_now(outcome):
    job, actions = exited(running(webhook=True), outcome, result=RESULT)
    assert actions == [DeliverWebhook(at=at(2))]
    assert job.webhook.next_attempt_at == at(2)


def finished_with_webhook() -> Job:
    return exited(running(webhook=True), RunOutcome.ok, result=RESULT)[0]


def answer(job: Job, now: float = 3, **kwargs: Any):
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
    assert_no_op(job, WebhookResponse(status_code=200))


def test_a_webhook_answer_after_delivery_is_a_no_op():
    delivered = answer(finished_with_webhook(), status_code=200).job
    assert_no_op(delivered, WebhookResponse(status_code=200))


def test_a_webhook_answer_for_another_post_is_a_no_op():
    job = finished_with_webhook()
    assert_no_op(job, WebhookResponse(attempt=2, status_code=200))
    first = answer(job, attempt=1, status_code=500).job
    assert first.webhook.attempts == 1 and not first.webhook.delivered
    assert_no_op(first, WebhookResponse(attempt=1, status_code=500))
    assert_no_op(first, WebhookResponse(attempt=1, status_code=200))
    assert answer(first, now=20, attempt=2, status_code=200).job.webhook.delivered


# --- time -------------------------------------------------------------------------------------


def test_tick_before_anything_is_due_does_nothing():
    job = finished_with_webhook()
    job = answer(job, status_code=500).job
    assert_no_op(job, Tick(), now=4)
    for state in (JobState.queued, JobState.running):
        assert_no_op(make_job().model_copy(update={"state": state}), Tick(), now=10**6)


def test_tick_makes_a_due_webhook_retry():
    job = answer(finished_with_webhook(), status_code=500).job
    transition = decide(job, Tick(), job.webhook.next_attempt_at, POLICY)
    assert transition.actions == [DeliverWebhook(at=job.webhook.next_attempt_at)]
    assert transition.changed is False


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


# --- reconciliation: any order, any repeats, the same end ------------------------------------

Step = tuple[Event, float]
"""An event and when it happened (seconds after T0), fixed however often it is applied."""


def interrupted(attempt: int) -> Interrupted:
    return Interrupted(reason=f"evicted {attempt}", attempt=attempt)


# Each scenario's events name the run (or POST) they are about, as a reconciler's must: then
# each can take effect only in the one state its predecessor leaves.
SCENARIOS: dict[str, tuple[Job, list[Step], JobState]] = {
    "success": (make_job(), [(Started(attempt=1), 1), (ended(1), 2)], JobState.done),
    "oom ladder, then the fallback succeeds": (
        make_job(webhook=True, memory=LADDER),
        [
            (Started(attempt=1), 1),
            (ended(1, RunOutcome.oom), 2),
            (ended(2, RunOutcome.oom), 3),
            (ended(3, RunOutcome.oom), 4),
            (ended(4), 5),
            (WebhookResponse(attempt=1, status_code=204), 6),
        ],
        JobState.done,
    ),
    "the fallback runs out of memory too": (
        make_job(webhook=True),
        [(Started(attempt=1), 1), (ended(1, RunOutcome.oom), 2), (ended(2, RunOutcome.oom), 3)],
        JobState.failed,
    ),
    "the interrupted fallback resumes": (
        make_job(),
        [
            (Started(attempt=1), 1),
            (ended(1, RunOutcome.oom), 2),
            (interrupted(2), 3),
            (Started(attempt=3), 4),
            (ended(3), 5),
        ],
        JobState.done,
    ),
    "a disruption replaced in place": (
        make_job(),
        [
            (Started(attempt=1), 1),
            (Interrupted(reason="evicted", attempt=1, replaced_by_backend="pod-a"), 2),
        ],
        JobState.running,
    ),
    "interrupted past the cap": (
        make_job(webhook=True),
        [
            (Started(attempt=1), 1),
            (interrupted(1), 2),
            (Started(attempt=2), 3),
            (ended(2, RunOutcome.interrupted, message="stopped"), 4),
            (Started(attempt=3), 5),
            (interrupted(3), 6),
            (Started(attempt=4), 7),
            (interrupted(4), 8),
        ],
        JobState.failed,
    ),
    "webhook retries, then delivered": (
        make_job(webhook=True),
        [
            (Started(attempt=1), 1),
            (ended(1), 2),
            (WebhookResponse(attempt=1, status_code=500), 3),
            (WebhookResponse(attempt=2, error="connection refused"), 20),
            (WebhookResponse(attempt=3, status_code=200), 70),
        ],
        JobState.done,
    ),
    "expiry": (
        make_job(webhook=True),
        [(Started(attempt=1), 1), (ended(1), 2), (Tick(), 50), (Tick(), 200)],
        JobState.expired,
    ),
}


def in_order(job: Job, steps: list[Step]) -> Job:
    for event, now in steps:
        job = decide(job, event, at(now), POLICY).job
    return job


def reconciled(job: Job, steps: list[Step], rng: random.Random) -> Job:
    """Every event twice a round, shuffled anew each round, until a round changes nothing."""
    # Each round that changes anything applies at least one event of the chain for good.
    for _ in range(len(steps) + 1):
        batch = steps * 2
        rng.shuffle(batch)
        changed = False
        for event, now in batch:
            transition = decide(job, event, at(now), POLICY)
            job, changed = transition.job, changed or transition.changed
        if not changed:
            return job
    pytest.fail(f"still changing after {len(steps) + 1} rounds")


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("name", SCENARIOS)
def test_reconciling_in_any_order_ends_where_the_events_in_order_end(name: str, seed: int):
    job, steps, state = SCENARIOS[name]
    expected = in_order(job, steps)
    assert expected.state is state
    assert reconciled(job, steps, random.Random(seed)).model_dump() == expected.model_dump()


# --- cancelling ----------------------------------------------------------------------------


def test_cancelling_a_queued_job_forgets_it_at_once():
    transition = decide(make_job(), Cancelled(), at(1), POLICY)
    assert transition.job.state is JobState.expired
    assert transition.actions == [DeleteArtifacts(), Expire()]


def test_cancelling_a_running_job_stops_its_run_and_sends_no_webhook():
    job = running(webhook=True)
    transition = decide(job, Cancelled(), at(2), POLICY)
    assert transition.job.state is JobState.expired
    assert transition.actions == [StopRunner(attempt=1), DeleteArtifacts(), Expire()]
    assert transition.job.webhook.next_attempt_at is None
    # The stopped run's exit comes late: nothing happens.
    assert_no_op(transition.job, ended(1, RunOutcome.interrupted))


def test_cancelling_twice_repeats_only_the_idempotent_clean_up():
    once = decide(make_job(), Cancelled(), at(1), POLICY).job
    again = decide(once, Cancelled(), at(2), POLICY)
    assert not again.changed and again.actions == [DeleteArtifacts(), Expire()]
