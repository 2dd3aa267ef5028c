"""The in-memory job index the local engine (and an API process) serves reads from."""

from __future__ import annotations

from datetime import UTC, datetime

from smartthumb.operator.jobindex import JobIndex
from smartthumb.operator.models import Job, JobState
from smartthumb.runner.spec import ThumbnailSpec

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def job(job_id: str, state: JobState = JobState.queued, batch_id: str | None = None) -> Job:
    return Job(
        id=job_id,
        state=state,
        batch_id=batch_id,
        spec=ThumbnailSpec(mode="fit", width=100),
        input_names=["a.png"],
        created_at=NOW,
    )


def test_queue_positions_and_counts_follow_every_change() -> None:
    index = JobIndex()
    for job_id in "abcd":
        index.put(job(job_id))
    assert [index.queue_position(job_id) for job_id in "abcd"] == [1, 2, 3, 4]
    index.put(job("a", JobState.running))
    index.put(job("c", JobState.done))
    assert [index.queue_position(job_id) for job_id in "abcd"] == [None, 1, None, 2]
    assert (index.queued, index.running) == (2, 1)
    # An interrupted run goes back to its place in the queue, not to the end.
    index.put(job("a", JobState.queued))
    assert [index.queue_position(job_id) for job_id in "abd"] == [1, 2, 3]
    index.remove("b")
    index.remove("missing")
    assert [index.queue_position(job_id) for job_id in "abd"] == [1, None, 2]
    assert (index.queued, index.running) == (2, 0)
    assert [one.id for one in index.jobs()] == ["a", "c", "d"]


def test_every_put_is_a_new_revision_and_batches_keep_their_order() -> None:
    index = JobIndex()
    first = index.put(job("a", batch_id="b"))
    index.put(job("z"))
    second = index.put(job("c", batch_id="b"))
    assert first.revision is not None and second.revision is not None
    assert second.revision > first.revision
    again = index.put(job("a", JobState.running, batch_id="b"))
    assert again.revision is not None and again.revision > second.revision
    assert [one.id for one in index.batch("b")] == ["a", "c"]
    assert index.get("a") is again and "a" in index and "missing" not in index
    index.remove("a")
    index.remove("c")
    assert index.batch("b") == []
