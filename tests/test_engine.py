"""The local engine end to end: real images, real runner processes, a real SQLite file."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from images import save_photo
from kubecluster import free_port
from PIL import Image
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from smartthumb.operator.backend import InputError, InputFile, QueueFullError
from smartthumb.operator.lifecycle import current_run
from smartthumb.operator.local import LocalEngine
from smartthumb.operator.local.engine import DataDirInUse, EngineConfigError
from smartthumb.operator.local.process import ForkServerError
from smartthumb.operator.local.store import JobStore
from smartthumb.operator.metrics import Metrics
from smartthumb.operator.models import FailureReason, Job, JobState, RunOutcome, RunRecord
from test_engine_support import (
    RESIZE,
    fork_server_pid,
    fork_server_starts_hang,
    jpeg_input,
    kill_fork_servers,
    process_running,
    returns_within,
    runner_workers,
    running_engine,
    settings,
    slow_png,
    wait_until,
)


@pytest.fixture(scope="module")
def big_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return slow_png(tmp_path_factory.mktemp("images") / "big.png")


def test_a_job_runs_to_done_with_a_real_thumbnail(tmp_path: Path):
    with running_engine(tmp_path) as engine:
        job = engine.submit(RESIZE, [jpeg_input("cover.JPG", 1920, 1080)], batch_id="b1")
        assert job.state is JobState.queued and job.queue_position == 1
        done = engine.wait(job.id, timeout=30)
        assert done.state is JobState.done and done.error is None
        assert done.result.output.width == 200 and done.result.fallback_used is False
        assert done.input_names == ["cover.JPG"]
        assert done.started_at <= done.finished_at < done.expires_at
        with Image.open(engine.output_path(job.id)) as image:
            assert image.size == (200, 200) and image.format == "JPEG"
        stored = list((tmp_path / "jobs" / job.id).glob("input-*"))
        assert [path.name for path in stored] == ["input-000.jpg"]  # the server names files
        assert [j.id for j in engine.list_batch("b1")] == [job.id]
        assert engine.stats().model_dump() == {
            "queued": 0,
            "running": 0,
            "capacity": 1000,
            "workers": 2,
        }


def test_unusable_submissions_raise_clear_errors(tmp_path: Path):
    with pytest.raises(ValidationError, match="exactly one of data and url"):
        InputFile(name="a.jpg", data=b"x", url="https://example.com/a.jpg")
    with pytest.raises(ValidationError, match="exactly one of data and url"):
        InputFile(name="a.jpg")
    with running_engine(tmp_path) as engine:
        with pytest.raises(InputError, match="at least one input"):
            engine.submit(RESIZE, [])
        assert engine.get("no-such-job") is None and engine.output_path("no-such-job") is None


def test_bad_input_fails_without_fallback(tmp_path: Path):
    registry = CollectorRegistry()
    engine = LocalEngine(settings(tmp_path), metrics=Metrics(registry))
    engine.start()
    try:
        job = engine.submit(RESIZE, [InputFile(name="notes.jpg", data=b"this is not an image")])
        failed = engine.wait(job.id, timeout=30)
    finally:
        engine.stop()
    assert failed.state is JobState.failed
    # The runner read the server's file (input-000.jpg); the client is told its own name.
    assert failed.error.startswith("notes.jpg: not a supported image"), failed.error
    assert [run.outcome for run in failed.runs] == [RunOutcome.bad_input]
    assert failed.result is None and failed.fallback_reason is None
    assert registry.get_sample_value("smartthumb_jobs_finished_total", {"state": "failed"}) == 1


def png_input(directory: Path) -> InputFile:
    """A 1920x1080 photo as PNG: no draft decoding, so the runner must map ~6 MiB anew."""
    path = save_photo(directory, "astronaut", size=(1920, 1080), fmt="PNG", suffix="png")
    return InputFile(name=path.name, data=path.read_bytes())


def test_out_of_memory_in_the_main_runner_falls_back(tmp_path: Path):
    # 64 MiB of address space is far below what the preloaded runner already maps: the first
    # new mapping (decoding the image) fails with MemoryError.
    registry = CollectorRegistry()
    engine = LocalEngine(settings(tmp_path, memory_limit_mb=64), metrics=Metrics(registry))
    engine.start()
    try:
        done = engine.wait(engine.submit(RESIZE, [png_input(tmp_path)]).id, timeout=30)
    finally:
        engine.stop()
    assert done.state is JobState.done
    assert done.result.fallback_used is True
    assert done.result.worker_warning == done.fallback_reason
    assert "ran out of memory" in done.fallback_reason and "64 MiB" in done.fallback_reason
    assert [(run.fallback, run.outcome) for run in done.runs] == [
        (False, RunOutcome.oom),
        (True, RunOutcome.ok),
    ]
    assert (
        registry.get_sample_value("smartthumb_runner_out_of_memory_total", {"runner": "main"}) == 1
    )
    assert registry.get_sample_value("smartthumb_fallbacks_total") == 1
    assert registry.get_sample_value("smartthumb_jobs_finished_total", {"state": "done"}) == 1


def test_out_of_memory_in_the_fallback_too_fails_clearly(tmp_path: Path):
    with running_engine(tmp_path, memory_limit_mb=64, fallback_memory_limit_mb=64) as engine:
        failed = engine.wait(engine.submit(RESIZE, [png_input(tmp_path)]).id, timeout=30)
    assert failed.state is JobState.failed
    assert failed.error.startswith("out of memory: the main runner and the light fallback both")
    assert [run.outcome for run in failed.runs] == [RunOutcome.oom, RunOutcome.oom]


def run_with_ladder(tmp_path: Path, max_mb: int) -> tuple[Job, CollectorRegistry]:
    """A job whose main run starts at 64 MiB, far too little (see above), with a ladder up to
    `max_mb`."""
    registry = CollectorRegistry()
    engine = LocalEngine(
        settings(tmp_path, memory_limit_mb=64, max_memory_limit_mb=max_mb),
        metrics=Metrics(registry),
    )
    engine.start()
    try:
        return engine.wait(engine.submit(RESIZE, [png_input(tmp_path)]).id, 60), registry
    finally:
        engine.stop()


def test_out_of_memory_retries_the_main_runner_with_double_the_limit(tmp_path: Path):
    # The limit doubles until the preloaded runner (all it maps) fits: where that happens
    # depends on the machine, but 1024 MiB is enough (every other test runs in the 1152 default).
    done, registry = run_with_ladder(tmp_path, max_mb=2048)
    assert done.state is JobState.done, done.error
    assert done.result.fallback_used is False and done.fallback_reason is None
    limits = [run.memory_mb for run in done.runs]
    assert limits == [64 * 2**step for step in range(len(limits))] and 128 <= limits[-1] <= 1024
    assert [(run.fallback, run.outcome) for run in done.runs] == [
        *[(False, RunOutcome.oom)] * (len(limits) - 1),
        (False, RunOutcome.ok),
    ]
    assert all(f"at the {run.memory_mb} MiB" in run.message for run in done.runs[:-1])
    assert (
        registry.get_sample_value("smartthumb_runner_out_of_memory_total", {"runner": "main"})
        == len(limits) - 1
    )
    assert registry.get_sample_value("smartthumb_fallbacks_total") == 0


def test_out_of_memory_at_the_top_of_the_ladder_falls_back(tmp_path: Path):
    done, _ = run_with_ladder(tmp_path, max_mb=128)
    assert done.state is JobState.done, done.error
    assert done.result.fallback_used is True
    assert "128 MiB" in done.fallback_reason
    assert [(run.fallback, run.memory_mb, run.outcome) for run in done.runs] == [
        (False, 64, RunOutcome.oom),
        (False, 128, RunOutcome.oom),
        (True, 768, RunOutcome.ok),  # fallback_memory_limit_mb's default
    ]


def test_as_many_jobs_run_at_once_as_there_are_workers_and_no_more(tmp_path: Path):
    with running_engine(tmp_path, workers=2) as engine:
        photo = jpeg_input(width=3000, height=2000)
        ids = [engine.submit(RESIZE, [photo]).id for _ in range(8)]
        jobs = [engine.wait(job_id, timeout=60) for job_id in ids]
    assert [job.state for job in jobs] == [JobState.done] * 8
    # Each run's start and end as +1/-1; at equal times an end counts before a start.
    edges = sorted(
        [(run.started_at, 1) for job in jobs for run in job.runs]
        + [(run.finished_at, -1) for job in jobs for run in job.runs]
    )
    running, peak = 0, 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    assert peak == 2


def test_a_runner_past_its_timeout_is_killed_and_failed(tmp_path: Path, big_png: Path):
    with running_engine(tmp_path, job_timeout_s=0.3) as engine:
        job = engine.submit(RESIZE, [InputFile(name="big.png", data=big_png.read_bytes())])
        failed = engine.wait(job.id, timeout=30)
    assert failed.state is JobState.failed
    assert failed.error == "timed out (the runner did not finish within 0.3 s)"
    assert [run.outcome for run in failed.runs] == [RunOutcome.timeout]


def test_a_full_queue_refuses_new_jobs(tmp_path: Path):
    engine = LocalEngine(settings(tmp_path, queue_capacity=2))  # not started: jobs stay queued
    try:
        first = engine.submit(RESIZE, [jpeg_input()])
        second = engine.submit(RESIZE, [jpeg_input()])
        with pytest.raises(QueueFullError, match="queue is full"):
            engine.submit(RESIZE, [jpeg_input()])
        assert (first.queue_position, second.queue_position) == (1, 2)
        assert engine.stats().queued == 2
        assert len(list((tmp_path / "jobs").iterdir())) == 2  # nothing left of the refused one
    finally:
        engine.stop()


def test_a_batch_that_does_not_fit_queues_none_of_its_jobs(tmp_path: Path):
    engine = LocalEngine(settings(tmp_path, queue_capacity=3))  # not started: jobs stay queued
    try:
        engine.submit(RESIZE, [jpeg_input()])
        with pytest.raises(QueueFullError, match="1 of 3 places taken, 3 asked for"):
            engine.submit_batch(RESIZE, [jpeg_input(), jpeg_input(), jpeg_input()], "b1")
        assert engine.list_batch("b1") == [] and engine.stats().queued == 1
        assert len(list((tmp_path / "jobs").iterdir())) == 1  # no inputs left behind
        jobs = engine.submit_batch(RESIZE, [jpeg_input(), jpeg_input()], "b2")
        assert [job.queue_position for job in jobs] == [2, 3]
        assert [job.id for job in engine.list_batch("b2")] == [job.id for job in jobs]
    finally:
        engine.stop()


def test_finished_jobs_expire_with_their_files(tmp_path: Path):
    with running_engine(tmp_path, ttl_s=0.5, sweep_interval_s=0.1) as engine:
        job = engine.wait(engine.submit(RESIZE, [jpeg_input()]).id, timeout=30)
        assert engine.output_path(job.id) is not None
        wait_until(lambda: not (tmp_path / "jobs" / job.id).exists(), timeout=10)
        assert engine.get(job.id) is None and engine.output_path(job.id) is None
        assert JobStore(tmp_path / "smartthumb.sqlite3").get(job.id) is None


def test_a_second_engine_on_the_same_data_directory_is_refused(tmp_path: Path):
    first = LocalEngine(settings(tmp_path))
    job = first.submit(RESIZE, [jpeg_input()])
    with pytest.raises(DataDirInUse) as refused:
        LocalEngine(settings(tmp_path))
    assert str(tmp_path) in str(refused.value) and f"pid {os.getpid()}" in str(refused.value)
    assert (tmp_path / "jobs" / job.id).is_dir()  # its inputs were left alone
    first.stop()
    second = LocalEngine(settings(tmp_path))  # free again
    assert second.get(job.id) is not None
    second.stop()


def test_a_second_api_process_on_the_same_data_directory_exits_saying_why(tmp_path: Path):
    env = {**os.environ, "SMARTTHUMB_DATA_DIR": str(tmp_path), "SMARTTHUMB_WORKERS": "1"}
    api = str(Path(sys.executable).parent / "smartthumb-api")
    first = subprocess.Popen(
        [api],
        env={**env, "SMARTTHUMB_PORT": str(free_port())},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert "smartthumb API on" in first.stdout.readline()
        second = subprocess.run(
            [api],
            env={**env, "SMARTTHUMB_PORT": str(free_port())},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode == 2
        [line] = second.stderr.splitlines()
        assert line.startswith("smartthumb-api: the data directory") and "in use by pid" in line
        assert str(first.pid) in line
    finally:
        first.terminate()
        first.wait(30)


def test_queued_jobs_survive_a_restart(tmp_path: Path):
    engine = LocalEngine(settings(tmp_path))
    job = engine.submit(RESIZE, [jpeg_input()])
    engine.stop()
    with running_engine(tmp_path) as restarted:
        assert restarted.wait(job.id, timeout=30).state is JobState.done


def test_a_job_left_running_by_a_dead_process_is_rerun(tmp_path: Path):
    engine = LocalEngine(settings(tmp_path))
    job = engine.submit(RESIZE, [jpeg_input()])
    engine.stop()
    # What a crash mid-run leaves behind: the row says running.
    store = JobStore(tmp_path / "smartthumb.sqlite3")
    now = datetime.now(UTC)
    store.save(
        job.model_copy(
            update={
                "state": JobState.running,
                "started_at": now,
                "runs": [RunRecord(fallback=False, started_at=now)],
            }
        )
    )
    store.close()
    with running_engine(tmp_path) as restarted:
        done = restarted.wait(job.id, timeout=30)
    assert done.state is JobState.done
    assert [run.outcome for run in done.runs] == [RunOutcome.interrupted, RunOutcome.ok]


def test_stop_requeues_running_work_and_the_next_engine_finishes_it(tmp_path: Path, big_png: Path):
    engine = LocalEngine(settings(tmp_path))
    engine.start()
    job = engine.submit(RESIZE, [InputFile(name="big.png", data=big_png.read_bytes())])
    wait_until(lambda: engine.get(job.id).state is JobState.running)
    engine.stop(graceful=False)
    store = JobStore(tmp_path / "smartthumb.sqlite3")
    assert store.get(job.id).state is JobState.queued
    store.close()
    with running_engine(tmp_path) as restarted:
        done = restarted.wait(job.id, timeout=60)
    assert done.state is JobState.done
    assert [run.outcome for run in done.runs] == [RunOutcome.interrupted, RunOutcome.ok]


def test_graceful_stop_finishes_running_work(tmp_path: Path, big_png: Path):
    engine = LocalEngine(settings(tmp_path))
    engine.start()
    job = engine.submit(RESIZE, [InputFile(name="big.png", data=big_png.read_bytes())])
    wait_until(lambda: engine.get(job.id).state is JobState.running)
    engine.stop(graceful=True, timeout=60)
    store = JobStore(tmp_path / "smartthumb.sqlite3")
    assert store.get(job.id).state is JobState.done
    store.close()


def test_a_runner_killed_by_sigkill_is_treated_as_oom_and_falls_back(tmp_path: Path, big_png: Path):
    # What the kernel's OOM killer does: SIGKILL mid-run, no chance to say anything.
    with running_engine(tmp_path, workers=1) as engine:
        job = engine.submit(RESIZE, [InputFile(name="big.png", data=big_png.read_bytes())])
        wait_until(lambda: engine.get(job.id).state is JobState.running and runner_workers())
        for pid in runner_workers():
            os.kill(pid, signal.SIGKILL)
        done = engine.wait(job.id, timeout=60)
    assert done.state is JobState.done, done.error
    assert done.result.fallback_used is True
    assert "SIGKILL" in done.result.worker_warning
    assert [(run.fallback, run.outcome) for run in done.runs] == [
        (False, RunOutcome.oom),
        (True, RunOutcome.ok),
    ]


def test_an_expired_row_left_by_a_crash_is_removed_and_the_scheduler_rests(tmp_path: Path):
    engine = LocalEngine(settings(tmp_path))
    job = engine.submit(RESIZE, [jpeg_input()])
    engine.stop()
    # What a crash between saving `expired` and deleting the row leaves behind.
    store = JobStore(tmp_path / "smartthumb.sqlite3")
    past = datetime(2020, 1, 1, tzinfo=UTC)
    store.save(job.model_copy(update={"state": JobState.expired, "expires_at": past}))
    store.close()
    engine = LocalEngine(settings(tmp_path, sweep_interval_s=30))
    sweeps = []
    due = engine._store.due

    def counting_due(*args, **kwargs):
        sweeps.append(1)
        return due(*args, **kwargs)

    engine._store.due = counting_due  # type: ignore[method-assign]  # a spy
    engine.start()
    try:
        wait_until(lambda: not (tmp_path / "jobs" / job.id).exists())
        wait_until(lambda: engine._store.get(job.id) is None)
        count = len(sweeps)
        # A spinning scheduler sweeps thousands of times a second; a resting one waits 30 s.
        assert not engine._wake.wait(0.5)
        assert len(sweeps) <= count + 1
    finally:
        engine.stop()


def test_job_directories_no_row_owns_are_removed_at_start(tmp_path: Path):
    engine = LocalEngine(settings(tmp_path))
    job = engine.submit(RESIZE, [jpeg_input()])
    engine.stop()
    orphan = tmp_path / "jobs" / "0123456789abcdef"
    orphan.mkdir()
    (orphan / "input-000.jpg").write_bytes(jpeg_input().data)
    with running_engine(tmp_path) as restarted:
        assert not orphan.exists()
        assert restarted.wait(job.id, timeout=30).state is JobState.done


def test_a_yolo_model_needs_a_memory_limit_it_fits_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("THUMBNAIL_YOLO_MODEL", "yolov8n.pt")
    engine = LocalEngine(settings(tmp_path, memory_limit_mb=1024))
    with pytest.raises(EngineConfigError) as refused:
        engine.start()
    assert "THUMBNAIL_YOLO_MODEL" in str(refused.value)
    assert "SMARTTHUMB_MEMORY_LIMIT_MB" in str(refused.value) and "4096" in str(refused.value)
    engine.stop()
    engine = LocalEngine(settings(tmp_path, memory_limit_mb=4096))
    engine.start()
    assert engine.healthy()
    engine.stop()


def test_a_worker_thread_survives_an_engine_error_and_fails_only_that_job(tmp_path: Path):
    with running_engine(tmp_path, workers=1) as engine:
        real_run = engine._forkserver.run
        calls = []

        def failing_once(*args, **kwargs):
            calls.append(1)
            if len(calls) == 1:
                raise ForkServerError("injected")
            return real_run(*args, **kwargs)

        engine._forkserver.run = failing_once  # type: ignore[method-assign]  # a fault injector
        failed = engine.wait(engine.submit(RESIZE, [jpeg_input()]).id, timeout=30)
        assert failed.state is JobState.failed
        assert failed.error == (
            "internal error in the runner (the engine failed: ForkServerError: injected)"
        )
        done = engine.wait(engine.submit(RESIZE, [jpeg_input()]).id, timeout=30)
        assert done.state is JobState.done and engine.healthy()


def test_the_scheduler_survives_a_failed_sweep(tmp_path: Path):
    with running_engine(tmp_path, ttl_s=0.5, sweep_interval_s=0.1) as engine:
        due = engine._store.due
        failures: list[int] = []

        def failing_once(*args, **kwargs):
            if not failures:
                failures.append(1)
                raise sqlite3.OperationalError("injected: database is locked")
            return due(*args, **kwargs)

        engine._store.due = failing_once  # type: ignore[method-assign]  # a fault injector
        job = engine.wait(engine.submit(RESIZE, [jpeg_input()]).id, timeout=30)
        wait_until(lambda: not (tmp_path / "jobs" / job.id).exists())
        assert failures and engine.healthy()


def test_a_killed_fork_server_is_restarted_and_jobs_go_on(tmp_path: Path):
    with running_engine(tmp_path, sweep_interval_s=0.2) as engine:
        assert engine.healthy()
        old = fork_server_pid()
        os.kill(old, signal.SIGKILL)
        wait_until(lambda: fork_server_pid() not in (None, old) and engine.healthy())
        done = engine.wait(engine.submit(RESIZE, [jpeg_input()]).id, timeout=30)
        assert done.state is JobState.done


def big_input(big_png: Path) -> InputFile:
    return InputFile(name="big.png", data=big_png.read_bytes())


def running_attempt(engine: LocalEngine, job_id: str) -> int | None:
    run = current_run(engine.get(job_id))
    return None if run is None else run.attempt


def test_a_job_running_when_the_fork_server_dies_is_requeued_and_done(
    tmp_path: Path, big_png: Path
):
    with running_engine(tmp_path, workers=1) as engine:
        job = engine.submit(RESIZE, [big_input(big_png)])
        wait_until(lambda: engine.get(job.id).state is JobState.running and runner_workers())
        os.kill(fork_server_pid(), signal.SIGKILL)  # not the job's doing, unlike its worker's
        done = engine.wait(job.id, timeout=60)
    assert done.state is JobState.done, done.error
    assert done.result.fallback_used is False and done.interruptions == 1
    assert [(run.outcome, run.message) for run in done.runs] == [
        (RunOutcome.interrupted, "the runner's fork server died"),
        (RunOutcome.ok, None),
    ]


def test_a_job_whose_fork_server_dies_every_time_fails_after_the_cap(tmp_path: Path, big_png: Path):
    with running_engine(tmp_path, workers=1) as engine:
        job = engine.submit(RESIZE, [big_input(big_png)])
        for attempt in range(1, 5):
            wait_until(lambda n=attempt: running_attempt(engine, job.id) == n and runner_workers())
            os.kill(fork_server_pid(), signal.SIGKILL)
        failed = engine.wait(job.id, timeout=60)
    assert failed.state is JobState.failed and failed.failure is FailureReason.interrupted
    assert failed.error == "interrupted 4 times, the last time: the runner's fork server died"
    assert [run.outcome for run in failed.runs] == [RunOutcome.interrupted] * 4


START_TIMEOUT_S = 10.0
"""Long enough for a real start on a busy machine, short enough to wait for in a test."""


def test_a_fork_server_restart_that_hangs_blocks_no_caller_and_is_retried(tmp_path: Path):
    engine = LocalEngine(
        settings(tmp_path / "data", workers=1, runner_start_timeout_s=START_TIMEOUT_S),
        metrics=Metrics(CollectorRegistry()),
    )
    engine.start()
    try:
        with fork_server_starts_hang(tmp_path / "hang"):
            old = fork_server_pid()
            os.kill(old, signal.SIGKILL)
            wait_until(lambda: not engine.healthy())
            first = returns_within(2, engine.submit, RESIZE, [jpeg_input()])
            wait_until(lambda: fork_server_pid() not in (None, old))
            hung = fork_server_pid()
            second = returns_within(2, engine.submit, RESIZE, [jpeg_input()])
            assert returns_within(2, engine.get, first.id).state is JobState.queued
            returns_within(2, engine.cancel, second.id)
            assert returns_within(2, engine.get, second.id) is None
            assert "fork server" in returns_within(2, engine.unready_reason)
            wait_until(lambda: not process_running(hung), timeout=START_TIMEOUT_S + 10)
        # The next try, a few seconds later, starts a working server: the job never ran before.
        done = engine.wait(first.id, timeout=60)
        assert done.state is JobState.done and done.interruptions == 0
        assert [run.outcome for run in done.runs] == [RunOutcome.ok]
        assert engine.healthy()
    finally:
        kill_fork_servers()  # unblocks an engine stuck on the hung one
        engine.stop(graceful=False)
    assert fork_server_pid() is None


def test_stop_returns_in_time_while_a_fork_server_restart_hangs(tmp_path: Path):
    engine = LocalEngine(settings(tmp_path / "data", workers=1))
    engine.start()
    stopper = threading.Thread(target=engine.stop, kwargs={"timeout": 1}, daemon=True)
    try:
        with fork_server_starts_hang(tmp_path / "hang"):
            old = fork_server_pid()
            os.kill(old, signal.SIGKILL)
            job = engine.submit(RESIZE, [jpeg_input()])
            wait_until(lambda: fork_server_pid() not in (None, old))
            hung = fork_server_pid()
            stopper.start()
            stopper.join(10)
        assert not stopper.is_alive(), "stop() blocks while the fork server restarts"
    finally:
        kill_fork_servers()  # unblocks an engine stuck on the hung one
        if stopper.is_alive():
            stopper.join(30)
    assert not process_running(hung)
    store = JobStore(tmp_path / "data" / "smartthumb.sqlite3")
    assert store.get(job.id).state is JobState.queued  # for the next start()
    store.close()
