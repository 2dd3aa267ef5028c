"""SMARTTHUMB_API_PROCESSES > 1: several HTTP server processes on one listening socket, so
that the front's throughput grows with cores (one Python process is held to one core by its
GIL).

This process binds the socket, runs the local engine (shared.EngineServer serves it to the
others on a Unix socket in the data directory) and starts the HTTP processes
(`python -m smartthumb.api.child`), each with a RemoteEngine; the kernel spreads connections
over them. On Kubernetes each HTTP process has a backend of its own (its own watch).
SIGINT/SIGTERM stop the HTTP processes (gracefully), then the engine; a process that dies
is started again.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from types import FrameType

from smartthumb.api.settings import ApiSettings
from smartthumb.operator.backend import BackendKind
from smartthumb.operator.local.engine import LocalEngine
from smartthumb.operator.local.settings import EngineSettings
from smartthumb.operator.local.shared import SOCKET_NAME, EngineServer

log = logging.getLogger(__name__)

FD_ENV = "SMARTTHUMB_API_FD"
"""The listening socket's file descriptor, inherited by each HTTP process."""
STOP_TIMEOUT_S = 70.0
"""uvicorn's graceful shutdown (60 s) and a margin, then SIGKILL."""
RESTART_PAUSE_S = 1.0
"""Between restarts of an HTTP process that keeps dying: it must not spin."""


def _listener(settings: ApiSettings) -> socket.socket:
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    listener = socket.create_server((settings.host, settings.port), family=family, backlog=2048)
    listener.set_inheritable(True)
    return listener


class Supervisor:
    def __init__(self, settings: ApiSettings) -> None:
        self._settings = settings
        self._stopping = threading.Event()
        self._engine: LocalEngine | None = None
        self._server: EngineServer | None = None
        if settings.backend is BackendKind.local:
            self._engine = LocalEngine(EngineSettings(public_url=settings.webhook_public_url()))
        self._listener = _listener(settings)
        self._children: list[subprocess.Popen[bytes]] = []

    def _spawn(self) -> subprocess.Popen[bytes]:
        fd = self._listener.fileno()
        env = {**os.environ, FD_ENV: str(fd)}
        return subprocess.Popen(
            [sys.executable, "-m", "smartthumb.api.child"], env=env, pass_fds=[fd]
        )

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self._stopping.set()

    def run(self) -> None:
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGTERM, self._stop)
        if self._engine is not None:
            self._engine.start()
            self._server = EngineServer(self._engine, self._engine.settings.data_dir / SOCKET_NAME)
            self._server.start()
        try:
            self._children = [self._spawn() for _ in range(self._settings.api_processes)]
            while not self._stopping.wait(0.5):
                for index, child in enumerate(self._children):
                    if child.poll() is not None:
                        log.warning(
                            "HTTP process %s exited (%s): starting another",
                            child.pid,
                            child.returncode,
                        )
                        time.sleep(RESTART_PAUSE_S)
                        self._children[index] = self._spawn()
        finally:
            self._shut_down()

    def _shut_down(self) -> None:
        for child in self._children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for child in self._children:
            try:
                child.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        self._listener.close()
        if self._server is not None:
            self._server.close()
        if self._engine is not None:
            # Graceful: running jobs finish, queued ones stay in the store for the next start.
            self._engine.stop(graceful=True)
