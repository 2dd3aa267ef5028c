"""The local engine's jobs in SQLite (WAL): everything survives a restart of the process.

Each row holds the Job as JSON (the single source of truth) plus the few columns the engine
queries by: state and submission order, batch, TTL and the next webhook attempt. Reads of
status are served from the engine's memory (JobIndex), loaded from here at start; this file is
written on every change and read by the scheduler and the workers.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from smartthumb.operator.models import Job

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    batch_id    TEXT,
    state       TEXT NOT NULL,
    expires_at  REAL,
    webhook_due REAL,
    inputs      TEXT NOT NULL,
    document    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, seq);
CREATE INDEX IF NOT EXISTS jobs_batch ON jobs (batch_id, seq);
CREATE INDEX IF NOT EXISTS jobs_expires ON jobs (expires_at);
CREATE INDEX IF NOT EXISTS jobs_webhook ON jobs (webhook_due);
"""


def _epoch(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment is not None else None


class JobStore:
    """Thread-safe: one connection shared behind a lock (SQLite serialises writers anyway)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a process crash; only a power cut may lose the tail.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _columns(self, job: Job) -> tuple[Any, ...]:
        return (
            job.batch_id,
            job.state.value,
            _epoch(job.expires_at),
            _epoch(job.webhook.next_attempt_at),
            job.model_dump_json(exclude={"queue_position"}),
        )

    def insert(self, job: Job, inputs: list[str]) -> None:
        """Add a new job; `inputs` are what the runner reads, files or URLs (never shown to
        clients)."""
        self.insert_all([(job, inputs)])

    def insert_all(self, rows: list[tuple[Job, list[str]]]) -> None:
        """Add new jobs (a batch) in one transaction: a crash or an error part-way stores none
        of them."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO jobs (batch_id, state, expires_at, webhook_due, document, id,"
                    " inputs) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(*self._columns(job), job.id, json.dumps(inputs)) for job, inputs in rows],
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def save(self, job: Job) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET batch_id = ?, state = ?, expires_at = ?, webhook_due = ?,"
                " document = ? WHERE id = ?",
                (*self._columns(job), job.id),
            )

    def delete(self, job_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, tuple(params)).fetchall()

    def get(self, job_id: str) -> Job | None:
        rows = self._rows("SELECT document FROM jobs WHERE id = ?", (job_id,))
        return Job.model_validate_json(rows[0][0]) if rows else None

    def inputs(self, job_id: str) -> list[str]:
        rows = self._rows("SELECT inputs FROM jobs WHERE id = ?", (job_id,))
        return list(json.loads(rows[0][0])) if rows else []

    def jobs(self) -> list[Job]:
        """Every job, in submission order: what the engine loads into memory at start."""
        rows = self._rows("SELECT document FROM jobs ORDER BY seq")
        return [Job.model_validate_json(document) for (document,) in rows]

    def ping(self) -> None:
        """Raises unless the database answers (readiness)."""
        self._rows("SELECT 1")

    def due(self, now: datetime, exclude: Iterable[str] = ()) -> list[str]:
        """Jobs whose TTL or next webhook attempt has come, less those in `exclude`."""
        excluded = list(exclude)
        marks = ",".join("?" * len(excluded))
        stamp = now.timestamp()
        rows = self._rows(
            "SELECT id FROM jobs WHERE (expires_at <= ? OR webhook_due <= ?)"
            f" AND id NOT IN ({marks}) ORDER BY seq",
            (stamp, stamp, *excluded),
        )
        return [job_id for (job_id,) in rows]

    def next_due(self, exclude: Iterable[str] = ()) -> float | None:
        """The earliest TTL or webhook attempt (unix seconds) among jobs not in `exclude`."""
        excluded = list(exclude)
        marks = ",".join("?" * len(excluded))
        rows = self._rows(
            "SELECT MIN(MIN(COALESCE(expires_at, 1e300), COALESCE(webhook_due, 1e300)))"
            f" FROM jobs WHERE id NOT IN ({marks})",
            excluded,
        )
        value = rows[0][0]
        return value if value is not None and value < 1e300 else None
