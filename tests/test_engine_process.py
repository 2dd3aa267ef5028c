"""How a runner process's exit status becomes a lifecycle event, and the argv it gets."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image
from smartthumb.operator.lifecycle import RunRunner
from smartthumb.operator.local.process import ForkServer, ForkServerError, classify, runner_argv
from smartthumb.operator.models import RunOutcome
from smartthumb.runner.cli import _build_parser
from smartthumb.runner.spec import ThumbnailSpec
from test_engine_support import (
    fork_server_pid,
    fork_server_starts_hang,
    kill_fork_servers,
    process_running,
    runner_workers,
    slow_png,
    vm_size_kb,
    wait_until,
)

RESULT = '{"mode":"fit","method":"fit","output":{"format":"jpeg","width":10,"height":5,"bytes":9}}'


@pytest.mark.parametrize(
    ("exit_code", "stderr", "outcome", "message"),
    [
        (2, "smartthumb: error: cannot read a.jpg\n", RunOutcome.bad_input, "cannot read a.jpg"),
        (
            3,
            "smartthumb: error: out of memory\n",
            RunOutcome.oom,
            "out of memory at the 512 MiB memory limit",
        ),
        (
            3,
            "smartthumb: error: out of memory (cv2.abi3.so: failed to map segment)\n",
            RunOutcome.oom,
            "out of memory (cv2.abi3.so: failed to map segment) at the 512 MiB memory limit",
        ),
        (-9, "", RunOutcome.oom, "killed by SIGKILL at the 512 MiB memory limit"),
        (137, "", RunOutcome.oom, "killed by SIGKILL at the 512 MiB memory limit"),
        (
            1,
            "smartthumb: error: internal error: KeyError: 'x'\n",
            RunOutcome.internal,
            "internal error: KeyError: 'x'",
        ),
        (-11, "", RunOutcome.oom, "killed by SIGSEGV at the 512 MiB memory limit"),
        (-6, "", RunOutcome.oom, "killed by SIGABRT at the 512 MiB memory limit"),
        (-15, "", RunOutcome.internal, "killed by SIGTERM"),
        (5, "", RunOutcome.internal, "exit code 5"),
        (None, "", RunOutcome.interrupted, "the runner's fork server died"),
        (0, "", RunOutcome.internal, "unreadable result on stdout"),
    ],
)
def test_exit_statuses(exit_code, stderr, outcome, message):
    event = classify(exit_code, "", stderr, memory_limit_mb=512, attempt=1)
    assert (event.outcome, event.message) == (outcome, message)


def test_a_clean_exit_carries_the_result():
    event = classify(0, "log line\n" + RESULT + "\n", "", memory_limit_mb=512, attempt=1)
    assert event.outcome is RunOutcome.ok and event.result.output.width == 10


@pytest.mark.parametrize("exit_code", [0, 2, 3, 1, None])
def test_the_event_names_the_run_that_ended(exit_code):
    assert classify(exit_code, RESULT, "", memory_limit_mb=512, attempt=3).attempt == 3


def test_the_argv_is_the_cli_contract(tmp_path: Path):
    spec = ThumbnailSpec(mode="fit", width=100)
    argv = runner_argv(
        spec,
        [str(tmp_path / "a.png"), "https://images.example.com/b.png"],
        tmp_path / "out.jpg",
        RunRunner(fallback=True, reason="oom"),
    )
    args = _build_parser().parse_args(argv)
    assert ThumbnailSpec.model_validate_json(args.spec) == spec
    assert args.inputs == [tmp_path / "a.png", "https://images.example.com/b.png"]
    assert args.output == tmp_path / "out.jpg"
    assert args.fallback and args.fallback_reason == "oom"
    assert (
        not _build_parser()
        .parse_args(runner_argv(spec, [str(tmp_path)], tmp_path, RunRunner(fallback=False)))
        .fallback
    )


def _fit_argv(tmp_path: Path, source: Path, name: str) -> list[str]:
    spec = ThumbnailSpec(mode="fit", width=64)
    return ["crop", "--spec", spec.model_dump_json(), "-o", str(tmp_path / name), str(source)]


def _source(tmp_path: Path) -> Path:
    source = tmp_path / "in.png"
    Image.radial_gradient("L").convert("RGB").resize((800, 600)).save(source)
    return source


@contextmanager
def running_fork_server(max_runs_per_worker: int = 500) -> Iterator[ForkServer]:
    server = ForkServer(max_runs_per_worker)
    server.start()
    try:
        yield server
    finally:
        server.close()


def _one_run(server, argv: list[str], stem: Path, limit_mb: int = 1024):
    run = server.run(argv, stem, limit_mb)
    assert run.wait(60)
    return run.outcome(1)


def test_warm_workers_survive_bad_input_and_are_replaced_after_oom_and_retirement(
    tmp_path: Path,
) -> None:
    source = _source(tmp_path)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with running_fork_server(max_runs_per_worker=2) as server:
        # Concurrent runs with workers retiring after two: none may be lost to a retiring one.
        runs = [
            server.run(_fit_argv(tmp_path, source, f"o{i}.jpg"), tmp_path / f"r{i}", 1024)
            for i in range(12)
        ]
        assert all(run.wait(60) for run in runs)
        assert [run.outcome(1).outcome for run in runs] == [RunOutcome.ok] * 12

    with running_fork_server(max_runs_per_worker=2) as server:
        ok = _one_run(server, _fit_argv(tmp_path, source, "a.jpg"), tmp_path / "a")
        assert ok.outcome is RunOutcome.ok
        [first] = runner_workers()
        bad = _one_run(server, _fit_argv(tmp_path, broken, "b.jpg"), tmp_path / "bad")
        assert bad.outcome is RunOutcome.bad_input
        wait_until(lambda: not runner_workers())  # its second run: it retired
        ok = _one_run(server, _fit_argv(tmp_path, source, "c.jpg"), tmp_path / "c")
        assert ok.outcome is RunOutcome.ok
        [second] = runner_workers()
        assert second != first

    with running_fork_server(max_runs_per_worker=100) as server:
        for name in ("d", "e"):
            assert (
                _one_run(
                    server, _fit_argv(tmp_path, source, f"{name}.jpg"), tmp_path / name
                ).outcome
                is RunOutcome.ok
            )
        [warm] = runner_workers()
        bad = _one_run(server, _fit_argv(tmp_path, broken, "f.jpg"), tmp_path / "f")
        assert bad.outcome is RunOutcome.bad_input
        assert runner_workers() == [warm]  # bad input does not cost the worker
        # A source that needs fresh memory: a small one can be served from the heap the warm
        # worker already maps (the face detector's warm-up leaves enough free there).
        big = tmp_path / "big.png"
        Image.radial_gradient("L").resize((4000, 3000)).save(big)
        starved = _one_run(server, _fit_argv(tmp_path, big, "s.jpg"), tmp_path / "oom", 64)
        assert starved.outcome is RunOutcome.oom
        after = _one_run(server, _fit_argv(tmp_path, source, "g.jpg"), tmp_path / "after")
        assert after.outcome is RunOutcome.ok, after
        [fresh] = runner_workers()
        assert fresh != warm


def test_a_grown_worker_takes_only_runs_whose_limit_leaves_room(tmp_path: Path) -> None:
    from smartthumb.operator.local.zygote import REUSE_FRACTION

    source = _source(tmp_path)
    with running_fork_server() as server:
        assert (
            _one_run(server, _fit_argv(tmp_path, source, "a.jpg"), tmp_path / "a").outcome
            is RunOutcome.ok
        )
        [warm] = runner_workers()
        size_mb = vm_size_kb(warm) / 1024  # what it reported: it has not run since
        roomy = int(size_mb / REUSE_FRACTION) + 8
        assert (
            _one_run(server, _fit_argv(tmp_path, source, "b.jpg"), tmp_path / "b", roomy).outcome
            is RunOutcome.ok
        )
        assert runner_workers() == [warm]
        tight = int(size_mb / REUSE_FRACTION) - 8
        _one_run(server, _fit_argv(tmp_path, source, "c.jpg"), tmp_path / "c", tight)
        wait_until(lambda: warm not in runner_workers())  # it retired for a fresh fork


def test_reports_of_a_worker_that_retires_at_once_are_never_lost(tmp_path: Path) -> None:
    # Each worker reports, then exits: the fork server often reaps it before reading the
    # report, and must still pass on the run's own exit code, once.
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with running_fork_server(max_runs_per_worker=1) as server:
        runs = [
            server.run(_fit_argv(tmp_path, broken, f"o{i}.jpg"), tmp_path / f"r{i}", 1024)
            for i in range(30)
        ]
        assert all(run.wait(60) for run in runs)
        assert {run.outcome(1).outcome for run in runs} == {RunOutcome.bad_input}
        assert server.alive


def test_a_run_killed_before_its_worker_read_it_costs_no_other_run(tmp_path: Path) -> None:
    # A cancel can reach a warm worker before it has read its run: its socket is then reset
    # (it died with data unread), not closed, and the fork server must take that as the
    # worker's end, not die of it and take every other run along.
    source = _source(tmp_path)
    with running_fork_server() as server:
        assert _one_run(server, _fit_argv(tmp_path, source, "a.jpg"), tmp_path / "a").outcome is (
            RunOutcome.ok
        )
        [warm] = runner_workers()
        zygote = fork_server_pid()
        os.kill(warm, signal.SIGSTOP)  # it cannot read the next run before it is killed
        try:
            run = server.run(_fit_argv(tmp_path, source, "b.jpg"), tmp_path / "b", 1024)
            server.kill(run.run_id)  # after the run, on the same pipe: it reached the worker
            assert run.wait(20)
            assert run.exit_code == -signal.SIGKILL
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(warm, signal.SIGKILL)
        after = _one_run(server, _fit_argv(tmp_path, source, "c.jpg"), tmp_path / "c")
        assert after.outcome is RunOutcome.ok
        assert server.alive and fork_server_pid() == zygote  # the same server: none restarted


def test_a_dead_fork_server_takes_its_workers_along_and_restarts_by_itself(
    tmp_path: Path,
) -> None:
    big = slow_png(tmp_path / "big.png")
    with running_fork_server() as server:
        old = fork_server_pid()
        assert old is not None
        running = server.run(_fit_argv(tmp_path, big, "a.jpg"), tmp_path / "a", 1024)
        # Stopped only once in the run: it opens the run's files after arming its death
        # signal. Stopped earlier (just forked, not yet scheduled), it would not die with the
        # server, which no worker that has begun a run can escape.
        wait_until(lambda: running.stderr.exists())
        [worker] = runner_workers()
        os.kill(worker, signal.SIGSTOP)  # mid-run, as if stuck in native code
        try:
            os.kill(old, signal.SIGKILL)
            assert running.wait(10)
            assert running.outcome(1).outcome is RunOutcome.interrupted  # lost, not failed
            # An orphan would write a.jpg beside the run the engine re-queued.
            wait_until(lambda: not process_running(worker), timeout=5)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker, signal.SIGKILL)
        assert server.wait_running(60)  # no run needed to bring it back
        assert fork_server_pid() not in (None, old)
        again = _one_run(server, _fit_argv(tmp_path, big, "b.jpg"), tmp_path / "b")
        assert again.outcome is RunOutcome.ok


def test_a_fork_server_that_is_never_ready_is_killed_at_the_start_timeout(
    tmp_path: Path,
) -> None:
    server = ForkServer(start_timeout_s=1)
    with fork_server_starts_hang(tmp_path / "hang"):
        began = time.monotonic()
        try:
            with pytest.raises(ForkServerError, match="not ready within 1 s"):
                server.start()
        finally:
            server.close()
            kill_fork_servers()
    assert time.monotonic() - began < 5
    assert fork_server_pid() is None


def test_close_ends_a_start_in_progress(tmp_path: Path) -> None:
    server = ForkServer(start_timeout_s=60)
    refused: list[ForkServerError] = []

    def start() -> None:
        try:
            server.start()
        except ForkServerError as error:
            refused.append(error)

    with fork_server_starts_hang(tmp_path / "hang"):
        starter = threading.Thread(target=start, daemon=True)
        starter.start()
        try:
            wait_until(lambda: fork_server_pid() is not None)
            began = time.monotonic()
            server.close()
            starter.join(10)
            assert not starter.is_alive() and time.monotonic() - began < 5
        finally:
            kill_fork_servers()
    assert [str(error) for error in refused] == ["the runner fork server was closed (exit -9)"]
    assert fork_server_pid() is None and not server.wait_running(0)


def test_the_reader_survives_stray_lines_and_duplicate_reports(tmp_path: Path) -> None:
    import subprocess
    import sys

    from smartthumb.operator.local.process import RunnerProcess

    server = ForkServer()
    first = RunnerProcess(server, 1, tmp_path / "one", 1024)
    second = RunnerProcess(server, 2, tmp_path / "two", 1024)
    report = '{"event": "exited", "id": 1, "exit_code": 2}'
    # A real process in the fork server's place: noise, a report, the same report again, EOF.
    fake = subprocess.Popen(
        [sys.executable, "-c", f"print('noise'); print('{report}'); print('{report}')"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    server._process, server._alive = fake, True
    server._runs.update({1: first, 2: second})
    server._read(fake)
    fake.wait()
    assert (first.exit_code, second.ended.is_set(), second.exit_code) == (2, True, None)
    assert not server.alive


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_workers_get_no_secret_of_the_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {
        "SMARTTHUMB_API_TOKENS": "tok-1",
        "SMARTTHUMB_WEBHOOK_SECRET": "whsec_c2VjcmV0",
        "SMARTTHUMB_S3_SECRET_ACCESS_KEY": "s3-key",
        "AWS_SECRET_ACCESS_KEY": "aws-key",
    }
    for name, value in {
        **secrets,
        "SMARTTHUMB_MAX_PIXELS": "12345678",
        "LC_ALL": "C.UTF-8",
    }.items():
        monkeypatch.setenv(name, value)
    source = _source(tmp_path)
    with running_fork_server() as server:
        assert (
            _one_run(server, _fit_argv(tmp_path, source, "o.jpg"), tmp_path / "r").outcome
            is RunOutcome.ok
        )
        assert server._process is not None
        zygote = server._process.pid
        workers = [
            int(pid) for pid in Path(f"/proc/{zygote}/task/{zygote}/children").read_text().split()
        ]
        assert workers, "a warm worker stays after its run"
        for pid in [zygote, *workers]:
            environ = _environ(pid)
            assert not set(secrets) & set(environ), pid
            assert "tok-1" not in str(environ) and "s3-key" not in str(environ)
            # What the runner reads still reaches it.
            assert environ["SMARTTHUMB_MAX_PIXELS"] == "12345678"
            assert environ["LC_ALL"] == "C.UTF-8" and environ["OMP_NUM_THREADS"] == "1"
            assert environ["PATH"] == os.environ["PATH"]
