"""The fork server: a process that imports the runner once, then forks runner workers.

A fresh interpreter per job would spend ~200 ms importing numpy and OpenCV; a fork of this
process starts in a few milliseconds, and a worker kept warm between runs (child.py) costs
nothing at all. (multiprocessing's forkserver re-imports the parent's __main__ script in
every child on Python 3.11, which costs as much as a fresh interpreter.)

Protocol, one JSON document per line. On stdin: {"op": "run", "id", "argv", "stdout",
"stderr", "memory_limit_mb"} and {"op": "kill", "id"}. On stdout: {"event": "ready"} once,
then {"event": "exited", "id", "exit_code"} exactly once per run (negative: killed by that
signal). Single-threaded on purpose: forking a threaded process can hand the child a lock held
by another thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import io
import json
import os
import selectors
import signal
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

from PIL import Image
from smartthumb.operator.local import child
from smartthumb.runner import pipeline  # noqa: F401 - the preload is the point
from smartthumb.runner.cli import main
from smartthumb.runner.errors import EXIT_INTERNAL
from smartthumb.runner.spec import ThumbnailSpec

REUSE_FRACTION = 0.75
"""An idle worker takes a run only while its address space is below this share of the run's
limit: RLIMIT_AS counts what earlier runs left mapped, and the fallback's limit is lower."""
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_LIBC = ctypes.CDLL(None, use_errno=True)


def _send(message: dict[str, Any]) -> None:
    os.write(1, (json.dumps(message) + "\n").encode())


def _warm_up() -> None:
    """Run a tiny fit and crop here, so that lazy set-up (OpenCV and its shared libraries, the
    face model, Pillow's plugins, pydantic validators) happens once instead of in every child,
    then freeze the heap so the children's garbage collector does not copy every page."""
    with contextlib.suppress(ImportError):  # OpenCV is the runner's optional "smart" extra
        import cv2

        # Fork safety: no thread pool may exist in the server (a child would inherit its
        # locks without its threads); the parallelism is across jobs anyway.
        cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory(prefix="smartthumb-warmup-") as directory:
        source = Path(directory) / "warmup.png"
        Image.radial_gradient("L").convert("RGB").save(source)
        for spec in (
            ThumbnailSpec(mode="fit", width=16, height=16),
            ThumbnailSpec(mode="crop", width=16, height=16),
        ):
            argv = ["crop", "--spec", spec.model_dump_json(), "-o", f"{directory}/out.jpg"]
            with (
                contextlib.redirect_stdout(io.StringIO()),
                contextlib.redirect_stderr(io.StringIO()),
            ):
                main([*argv, str(source)])
    gc.collect()
    gc.freeze()


def _die_with(server_pid: int) -> None:
    """SIGKILL this worker when the fork server dies: the engine re-queues the run, and an
    orphan would go on writing that job's files beside its next run."""
    if _LIBC.prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGKILL)) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != server_pid:  # it died before the prctl
        os._exit(EXIT_INTERNAL)


class _Worker:
    """A forked runner worker and the run it is busy with (None: idle)."""

    def __init__(self, pid: int, connection: socket.socket) -> None:
        self.pid = pid
        self.connection = connection
        self.reader = connection.makefile("rb")
        self.run_id: int | None = None
        self.vm_kb = 0  # VmSize at its last report; a fresh fork is as small as it gets

    def close(self) -> None:
        self.reader.close()  # the makefile holds the socket open too
        self.connection.close()


class _Server:
    def __init__(self, max_runs: int) -> None:
        self.max_runs = max_runs
        self.selector = selectors.DefaultSelector()
        self.workers: dict[int, _Worker] = {}  # pid -> worker
        self.idle: list[_Worker] = []
        self.busy: dict[int, _Worker] = {}  # run id -> worker
        self.wakeup_r, self.wakeup_w = os.pipe()
        os.set_blocking(self.wakeup_r, False)
        os.set_blocking(self.wakeup_w, False)
        signal.set_wakeup_fd(self.wakeup_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so SIGCHLD hits the fd
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the engine decides when to stop

    def _spawn(self) -> _Worker:
        ours, theirs = socket.socketpair()
        server_pid = os.getpid()
        pid = os.fork()
        if pid == 0:
            try:
                _die_with(server_pid)
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                for fd in (
                    self.wakeup_r,
                    self.wakeup_w,
                    ours.fileno(),
                    *(w.connection.fileno() for w in self.workers.values()),
                ):
                    if fd != -1:  # -1: a worker hung up on, not reaped yet
                        os.close(fd)
                # Not the server's pipes: the engine must see EOF once the server is gone.
                null = os.open(os.devnull, os.O_RDWR)
                os.dup2(null, 0)
                os.dup2(null, 1)
                child.serve(theirs, self.max_runs)
            finally:
                os._exit(EXIT_INTERNAL)
        theirs.close()
        worker = _Worker(pid, ours)
        self.workers[pid] = worker
        self.selector.register(ours, selectors.EVENT_READ, worker)
        return worker

    def _take_idle(self, memory_limit_mb: int) -> _Worker | None:
        """The most recent idle worker small enough for the run; those too big retire."""
        while self.idle:
            worker = self.idle.pop()
            if worker.vm_kb * 1024 < REUSE_FRACTION * memory_limit_mb * child.MIB:
                return worker
            self._hang_up(worker)  # it sees EOF and exits; reaping forgets it
        return None

    def _hang_up(self, worker: _Worker) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(worker.connection)
        worker.close()

    def run(self, request: dict[str, Any]) -> None:
        worker = self._take_idle(request["memory_limit_mb"]) or self._spawn()
        worker.run_id = request["id"]
        self.busy[request["id"]] = worker
        try:
            worker.connection.sendall(json.dumps(request).encode() + b"\n")
        except OSError:
            pass  # it died meanwhile: reaping it reports the run

    def kill(self, run_id: int) -> None:
        worker = self.busy.get(run_id)
        if worker is not None:  # not reaped yet, so the pid cannot have been reused
            os.kill(worker.pid, signal.SIGKILL)

    def _report(self, worker: _Worker, line: bytes) -> dict[str, Any] | None:
        """Pass on a worker's report of its run; None when `line` is no report."""
        try:
            report: dict[str, Any] = json.loads(line)
        except ValueError:  # cut short: the worker died while writing it
            return None
        self.busy.pop(report["id"], None)
        worker.run_id = None
        worker.vm_kb = report["vm_kb"]
        _send({"event": "exited", "id": report["id"], "exit_code": report["exit_code"]})
        return report

    def _finished(self, worker: _Worker) -> None:
        """A worker reported its run (or hung up: it retired or died, and reaping tells)."""
        if self.workers.get(worker.pid) is not worker:
            return  # reaped earlier in this select() batch, which still held its key
        try:
            line = worker.reader.readline()
        except ConnectionResetError:  # killed with its run unread (a cancel came first)
            line = b""
        if not line:
            self.selector.unregister(worker.connection)
            if worker in self.idle:  # it died idle: no run may go to it
                self.idle.remove(worker)
            return
        report = self._report(worker, line)
        if report is not None and not report["retire"]:
            self.idle.append(worker)  # a retiring worker exits now; reaping forgets it

    def reap(self) -> None:
        while self.workers:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return
            worker = self.workers.pop(pid)
            if worker in self.idle:
                self.idle.remove(worker)
            reported = False
            if worker.run_id is not None and not worker.reader.closed:
                # A report it sent before exiting wins over its exit status. Its end of the
                # socket is closed, so this reads buffered data then EOF (the timeout only
                # guards against a grandchild that kept it open).
                worker.connection.settimeout(1.0)
                with contextlib.suppress(OSError):
                    line = worker.reader.readline()
                    reported = bool(line) and self._report(worker, line) is not None
            self._hang_up(worker)
            if worker.run_id is not None and not reported:
                self.busy.pop(worker.run_id, None)
                exit_code = os.waitstatus_to_exitcode(status)
                _send({"event": "exited", "id": worker.run_id, "exit_code": exit_code})

    def serve(self) -> None:
        self.selector.register(0, selectors.EVENT_READ)
        self.selector.register(self.wakeup_r, selectors.EVENT_READ)
        pending = b""
        _send({"event": "ready"})
        while True:
            for key, _ in self.selector.select():
                if isinstance(key.data, _Worker):
                    self._finished(key.data)
                    continue
                if key.fd == self.wakeup_r:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(self.wakeup_r, 4096):
                            pass
                    self.reap()
                    continue
                chunk = os.read(0, 1 << 20)
                if not chunk:  # the engine is gone: so is the reason to run
                    for pid in self.workers:
                        os.kill(pid, signal.SIGKILL)
                    return
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    request = json.loads(line)
                    if request["op"] == "run":
                        self.run(request)
                    else:
                        self.kill(request["id"])
            self.reap()  # a SIGCHLD may land between select() and the read


if __name__ == "__main__":
    _warm_up()
    _Server(max_runs=int(sys.argv[1])).serve()
