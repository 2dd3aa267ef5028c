"""Long-polls on one job: `wait` sleeps until the job is finished, `subscribe` calls back on
every change (what an event loop waits on without a thread), and `notify` wakes only the
waiters of the job that changed (not every long-poll in the process)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

Changed = Callable[[], None]

from smartthumb.operator.backend import UnknownJobError
from smartthumb.operator.models import Job


class Waiters:
    def __init__(self, lock: threading.RLock | threading.Lock) -> None:
        self._lock = lock
        self._conditions: dict[str, tuple[threading.Condition, int]] = {}
        self._callbacks: dict[str, list[Changed]] = {}

    def wait(self, job_id: str, read: Callable[[], Job | None], timeout: float) -> Job:
        """`read()` (called with the lock held) once it returns a finished job. Raises
        UnknownJobError when it returns None, TimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._lock:
            changed, count = self._conditions.get(job_id, (threading.Condition(self._lock), 0))
            self._conditions[job_id] = (changed, count + 1)
            try:
                while True:
                    job = read()
                    if job is None:
                        raise UnknownJobError(job_id)
                    if job.state.finished:
                        return job
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError(
                            f"job {job_id} still {job.state.value} after {timeout} s"
                        )
                    changed.wait(remaining)
            finally:
                changed, count = self._conditions[job_id]
                if count == 1:
                    del self._conditions[job_id]
                else:
                    self._conditions[job_id] = (changed, count - 1)

    def subscribe(self, job_id: str, changed: Changed) -> Changed:
        """Call `changed()` after every change of the job, from the changing thread with the
        lock held (so it must only hand the news on); returns the function that stops it."""
        with self._lock:
            self._callbacks.setdefault(job_id, []).append(changed)

        def unsubscribe() -> None:
            with self._lock:
                callbacks = self._callbacks.get(job_id, [])
                if changed in callbacks:
                    callbacks.remove(changed)
                if not callbacks:
                    self._callbacks.pop(job_id, None)

        return unsubscribe

    def notify(self, job_id: str) -> None:
        """Wake the job's waiters; the caller holds the lock."""
        waiting = self._conditions.get(job_id)
        if waiting is not None:
            waiting[0].notify_all()
        for changed in self._callbacks.get(job_id, ()):
            changed()
