"""The SQLite job store, on a real file."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from smartthumb.operator.local.store import JobStore
from smartthumb.operator.models import Job, JobState, WebhookDelivery
from smartthumb.runner.spec import ThumbnailSpec

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def job(job_id: str, **fields) -> Job:
    return Job(
        id=job_id,
        spec=ThumbnailSpec(mode="fit", width=100),
        input_names=["a.png"],
        created_at=NOW,
        **fields,
    )


def test_jobs_survive_reopening_the_file(tmp_path: Path):
    path = tmp_path / "jobs.sqlite3"
    store = JobStore(path)
    store.insert(job("a", batch_id="b1"), ["/data/a.png"])
    store.close()
    reopened = JobStore(path)
    assert reopened.get("a") == job("a", batch_id="b1")
    assert reopened.inputs("a") == ["/data/a.png"]
    assert reopened.jobs() == [job("a", batch_id="b1")]
    assert reopened._rows("PRAGMA journal_mode")[0][0] == "wal"


def test_save_updates_state_and_document(tmp_path: Path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    store.insert(job("a"), [])
    store.save(job("a", state=JobState.failed, error="bad"))
    saved = store.get("a")
    assert saved is not None and saved.error == "bad"
    assert [(one.id, one.state) for one in store.jobs()] == [("a", JobState.failed)]


def test_jobs_come_back_in_submission_order(tmp_path: Path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    for job_id in "cab":
        store.insert(job(job_id), [])
    store.save(job("c", state=JobState.running))
    assert [one.id for one in store.jobs()] == ["c", "a", "b"]


def test_due_covers_ttls_and_webhook_retries_except_excluded(tmp_path: Path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    soon = NOW + timedelta(seconds=10)
    store.insert(job("ttl", state=JobState.done, expires_at=soon), [])
    store.insert(
        job(
            "hook",
            state=JobState.done,
            expires_at=NOW + timedelta(hours=2),
            webhook=WebhookDelivery(enabled=True, url="https://x", next_attempt_at=NOW),
        ),
        [],
    )
    store.insert(job("idle"), [])
    assert store.due(NOW) == ["hook"]
    assert store.due(soon) == ["ttl", "hook"]
    assert store.due(soon, exclude=["hook"]) == ["ttl"]
    assert store.next_due() == NOW.timestamp()
    assert store.next_due(exclude=["hook"]) == soon.timestamp()
    store.delete("ttl")
    store.delete("hook")
    assert store.next_due() is None and store.get("ttl") is None


def test_jobs_lists_every_job_in_any_state(tmp_path: Path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    assert store.jobs() == []
    store.insert(job("a"), [])
    store.insert(job("b").model_copy(update={"state": JobState.expired}), [])
    assert [one.id for one in store.jobs()] == ["a", "b"]
    store.close()


def test_a_batch_is_stored_whole_or_not_at_all(tmp_path: Path):
    path = tmp_path / "jobs.sqlite3"
    store = JobStore(path)
    store.insert(job("taken"), [])
    batch = [(job(f"part-{n}", batch_id="b"), [f"/in/{n}.png"]) for n in range(3)]
    with pytest.raises(sqlite3.IntegrityError):  # the last part's id is in use
        store.insert_all([*batch, (job("taken", batch_id="b"), [])])
    assert [one.id for one in store.jobs()] == ["taken"]
    reader = JobStore(path)  # what another connection (a restart) finds in the file
    assert [one.id for one in reader.jobs()] == ["taken"]
    store.insert_all(batch)
    assert [one.id for one in reader.jobs()] == ["taken", "part-0", "part-1", "part-2"]
    assert reader.inputs("part-2") == ["/in/2.png"]
