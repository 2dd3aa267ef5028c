"""One HTTP process of several (processes.py): the app on the listening socket it inherited,
over the engine of the process that started it (or a Kubernetes backend of its own)."""

from __future__ import annotations

import ctypes
import os
import signal
import socket

import uvicorn
from smartthumb.api.app import create_app
from smartthumb.api.processes import FD_ENV
from smartthumb.api.server import return_freed_memory, server_config
from smartthumb.api.settings import ApiSettings
from smartthumb.operator.backend import BackendKind, create_backend
from smartthumb.operator.local.settings import EngineSettings
from smartthumb.operator.local.shared import RemoteEngine

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def main() -> None:
    # Ends with the process that started it, however that one ends.
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    settings = ApiSettings()
    if settings.backend is BackendKind.local:
        remote = RemoteEngine(EngineSettings().data_dir)
        app = create_app(settings, remote, metrics_source=remote.metrics)
    else:
        app = create_app(settings, create_backend(settings.backend, settings.webhook_public_url()))
    listener = socket.socket(fileno=int(os.environ[FD_ENV]))
    return_freed_memory()
    uvicorn.Server(server_config(app, settings)).run(sockets=[listener])


if __name__ == "__main__":
    main()
