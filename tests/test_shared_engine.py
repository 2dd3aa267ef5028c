"""One local engine, several API processes (SMARTTHUMB_API_PROCESSES): each API process's
RemoteEngine sees every job at once, its long-polls wake as soon as the engine's news
arrives, the engine's refusals reach it, and the local engine's guarantees hold (a restart
loses nothing, no job runs twice); and `smartthumb-api` itself as a tree of real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from apiserver import b64, encode
from images import photo
from kubecluster import free_port
from smartthumb.operator.backend import (
    BackendStartError,
    InputError,
    InputFile,
    QueueFullError,
    UnknownJobError,
)
from smartthumb.operator.local import LocalEngine
from smartthumb.operator.local.shared import SOCKET_NAME, EngineServer, RemoteEngine
from smartthumb.operator.models import JobState
from test_engine_support import RESIZE, jpeg_input, running_engine, settings, slow_png, wait_until


@pytest.fixture(scope="module")
def big_png(tmp_path_factory: pytest.TempPathFactory) -> InputFile:
    path = slow_png(tmp_path_factory.mktemp("images") / "big.png")
    return InputFile(name="big.png", data=path.read_bytes())


@contextmanager
def served(engine: LocalEngine, count: int = 2) -> Iterator[list[RemoteEngine]]:
    """`engine` on its socket, and `count` API processes' backends connected to it."""
    server = EngineServer(engine, engine.settings.data_dir / SOCKET_NAME)
    server.start()
    remotes = [RemoteEngine(engine.settings.data_dir) for _ in range(count)]
    try:
        for remote in remotes:
            remote.start()
        yield remotes
    finally:
        for remote in remotes:
            remote.stop()
        server.close()


def test_every_api_process_sees_each_job_at_once_and_long_polls_wake_on_the_news(
    tmp_path: Path, big_png: InputFile
) -> None:
    with running_engine(tmp_path, workers=1) as engine, served(engine) as (one, other):
        blocker = one.submit(RESIZE, [big_png])
        job = one.submit(RESIZE, [jpeg_input()])
        seen = other.get(job.id)  # through the other process, at once
        assert seen is not None and seen.state is JobState.queued
        woke: list[datetime] = []
        waiter = threading.Thread(
            target=lambda: woke.append(other.wait(job.id, 60).finished_at or datetime.min)
        )
        changed = threading.Event()
        other.subscribe(job.id, changed.set)
        waiter.start()
        wait_until(lambda: (one.get(job.id) or seen).queue_position == 1, timeout=30)
        done = engine.wait(job.id, 60)
        waiter.join(10)
        assert woke and woke[0] == done.finished_at
        # The news reached the other process well within a second of the job's end.
        lag = datetime.now(UTC) - done.finished_at
        assert changed.is_set() and lag.total_seconds() < 5
        assert len(done.runs) == 1  # run once, however many processes watch it
        for remote in (one, other):  # each copy follows within milliseconds
            shown = remote.wait(job.id, 10)
            assert shown.state is JobState.done
            assert remote.output_file(shown) == engine.output_file(done)
        assert [item.id for item in other.list_batch("none")] == []
        other.cancel(blocker.id)
        wait_until(lambda: one.get(blocker.id) is None)
        assert other.stats().queued == 0 and other.stats().workers == 1


def test_the_engine_s_refusals_reach_the_api_process(tmp_path: Path) -> None:
    engine = LocalEngine(settings(tmp_path, queue_capacity=1))  # not started: jobs stay queued
    try:
        with served(engine, 1) as (remote,):
            remote.submit(RESIZE, [jpeg_input()])
            with pytest.raises(QueueFullError):
                remote.submit(RESIZE, [jpeg_input()])
            with pytest.raises(InputError):
                remote.submit(RESIZE, [])
            with pytest.raises(UnknownJobError):
                remote.cancel("nope")
            assert remote.get("nope") is None and remote.get("0" * 32) is None  # asked
            assert remote.unready_reason() is not None  # the engine was never started
    finally:
        engine.stop()


def test_an_id_the_engine_does_not_have_is_asked_for_once(tmp_path: Path) -> None:
    """A client polling a wrong or expired id must not cost an engine request per poll:
    the second poll is answered although the engine's process is gone meanwhile."""
    engine = LocalEngine(settings(tmp_path))
    try:
        server = EngineServer(engine, tmp_path / SOCKET_NAME)
        server.start()
        remote = RemoteEngine(tmp_path)
        remote.start()
        unknown, never_asked = "1" * 32, "2" * 32
        assert remote.get(unknown) is None  # asked
        server.close()
        wait_until(lambda: not remote.healthy())
        assert remote.get(unknown) is None  # remembered: no request
        with pytest.raises(BackendStartError):
            remote.get(never_asked)  # this one would need the engine
        remote.stop()
    finally:
        engine.stop()


def test_a_restart_of_everything_loses_nothing_and_runs_nothing_twice(tmp_path: Path) -> None:
    engine = LocalEngine(settings(tmp_path))  # not started: what it takes stays queued
    with served(engine) as (one, other):
        ids = [one.submit(RESIZE, [jpeg_input()]).id for _ in range(2)]
        ids.append(other.submit_batch(RESIZE, [jpeg_input()], "b")[0].id)
    engine.stop()
    with running_engine(tmp_path) as restarted, served(restarted, 1) as (remote,):
        for job_id in ids:
            done = remote.wait(job_id, 60)
            assert done.state is JobState.done and len(done.runs) == 1
        assert [job.id for job in remote.list_batch("b")] == ids[2:]


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for task in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                children = [int(child) for child in task.read_text().split()]
            except OSError:
                continue
            found.update(children)
            frontier += children
    return found


def alive(pid: int) -> bool:
    """Running, not a zombie (one whose parent ended before it waits for init to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def http_processes(pid: int) -> set[int]:
    return {
        child
        for child in descendants(pid)
        if b"smartthumb.api.child" in Path(f"/proc/{child}/cmdline").read_bytes()
    }


def test_smartthumb_api_serves_from_several_processes_and_stops_them_all(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "SMARTTHUMB_DATA_DIR": str(tmp_path),
        "SMARTTHUMB_PORT": str(port),
        "SMARTTHUMB_API_PROCESSES": "3",
        "SMARTTHUMB_WORKERS": "2",
    }
    api = subprocess.Popen([str(Path(sys.executable).with_name("smartthumb-api"))], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: len(http_processes(api.pid)) == 3, timeout=60)
        started = http_processes(api.pid)

        def ready() -> bool:
            try:
                return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, timeout=60)
        image = b64(encode(photo("astronaut").resize((320, 200)), quality=90))
        body = {"image_data": image, "operation": "resize", "width": 50, "height": 50}
        ids = []
        for _ in range(12):  # a connection each: the kernel spreads them over the processes
            answer = httpx.post(f"{url}/jobs", json=body, timeout=30)
            assert answer.status_code == 202, answer.text
            job_id = answer.json()["job_id"]
            # Read at once on a new connection, maybe by another process: never a 404.
            assert httpx.get(f"{url}/jobs/{job_id}", timeout=30).status_code == 200
            ids.append(job_id)
        for job_id in ids:
            done = httpx.get(f"{url}/job/{job_id}", params={"wait": 30}, timeout=60).json()
            assert done["status"] == "done", done
            assert httpx.get(f"{url}/jobs/{job_id}/download", timeout=30).status_code == 200
        # The jobs are counted in the engine's process; every HTTP process shows its metrics.
        for _ in range(3):
            text = httpx.get(f"{url}/metrics", timeout=30).text
            assert 'smartthumb_jobs_finished_total{state="done"} 12.0' in text
        tree = descendants(api.pid)
    finally:
        api.send_signal(signal.SIGTERM)
        api.wait(90)
    assert api.returncode == 0
    assert started <= tree
    time.sleep(0.5)
    assert not [pid for pid in tree if alive(pid)], "processes left behind"
