"""The fork server: a process that imports the runner once, then forks one child per run.

A fresh interpreter per job would spend ~200 ms importing numpy and OpenCV; a fork of this
process starts in a few milliseconds. (multiprocessing's forkserver re-imports the parent's
__main__ script in every child on Python 3.11, which costs as much.)

Protocol, one JSON document per line. On stdin: {"op": "run", "id", "argv", "stdout",
"stderr", "memory_limit_mb"} and {"op": "kill", "id"}. On stdout: {"event": "ready"} once,
then {"event": "exited", "id", "exit_code"} per run
(negative: killed by that signal). Single-threaded on purpose: forking a threaded process
can hand the child a lock held by another thread.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import os
import selectors
import signal
import tempfile
from pathlib import Path
from typing import Any

from PIL import Image
from smartthumb.operator.local import child
from smartthumb.runner import pipeline  # noqa: F401 - the preload is the point
from smartthumb.runner.cli import main
from smartthumb.runner.errors import EXIT_INTERNAL
from smartthumb.runner.spec import ThumbnailSpec


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


class _Server:
    def __init__(self) -> None:
        self.children: dict[int, int] = {}  # pid -> run id
        self.by_id: dict[int, int] = {}  # run id -> pid
        self.wakeup_r, self.wakeup_w = os.pipe()
        os.set_blocking(self.wakeup_r, False)
        os.set_blocking(self.wakeup_w, False)
        signal.set_wakeup_fd(self.wakeup_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so SIGCHLD hits the fd
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the engine decides when to stop

    def fork(self, request: dict[str, Any]) -> None:
        pid = os.fork()
        if pid == 0:
            try:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                os.close(self.wakeup_r)
                os.close(self.wakeup_w)
                null = os.open(os.devnull, os.O_RDONLY)
                os.dup2(null, 0)
                child.run(
                    request["argv"],
                    request["stdout"],
                    request["stderr"],
                    request["memory_limit_mb"],
                )
            finally:
                os._exit(EXIT_INTERNAL)
        self.children[pid] = request["id"]
        self.by_id[request["id"]] = pid

    def kill(self, run_id: int) -> None:
        pid = self.by_id.get(run_id)
        if pid is not None:  # not reaped yet, so the pid cannot have been reused
            os.kill(pid, signal.SIGKILL)

    def reap(self) -> None:
        while self.children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return
            run_id = self.children.pop(pid)
            del self.by_id[run_id]
            _send({"event": "exited", "id": run_id, "exit_code": os.waitstatus_to_exitcode(status)})

    def serve(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(0, selectors.EVENT_READ)
        selector.register(self.wakeup_r, selectors.EVENT_READ)
        pending = b""
        _send({"event": "ready"})
        while True:
            for key, _ in selector.select():
                if key.fd == self.wakeup_r:
                    try:
                        while os.read(self.wakeup_r, 4096):
                            pass
                    except BlockingIOError:
                        pass
                    self.reap()
                    continue
                chunk = os.read(0, 1 << 20)
                if not chunk:  # the engine is gone: so is the reason to run
                    for pid in self.children:
                        os.kill(pid, signal.SIGKILL)
                    return
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    request = json.loads(line)
                    if request["op"] == "run":
                        self.fork(request)
                    else:
                        self.kill(request["id"])
            self.reap()  # a SIGCHLD may land between select() and the read


if __name__ == "__main__":
    _warm_up()
    _Server().serve()
