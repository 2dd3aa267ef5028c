"""`smartthumb-api`: serve the API with uvicorn on SMARTTHUMB_HOST:SMARTTHUMB_PORT."""

from __future__ import annotations

import sys
from typing import NoReturn

import uvicorn
from pydantic import ValidationError
from smartthumb.api.app import create_app
from smartthumb.api.processes import Supervisor
from smartthumb.api.server import return_freed_memory, server_config
from smartthumb.api.settings import ApiSettings
from smartthumb.operator.backend import BackendStartError


def _refuse_to_start(problem: object) -> NoReturn:
    """The user's settings or state: one line, not a trace."""
    print(f"smartthumb-api: {problem}", file=sys.stderr)
    sys.exit(2)


def main() -> None:
    try:
        settings = ApiSettings()
    except ValidationError as error:
        first = error.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        field = "_".join(str(part) for part in first["loc"]).upper()
        _refuse_to_start(f"SMARTTHUMB_{field}: {message}" if field else message)
    supervisor: Supervisor | None = None
    try:
        if settings.api_processes > 1:
            supervisor = Supervisor(settings)
        else:
            app = create_app(settings)
    except BackendStartError as error:
        _refuse_to_start(error)
    except OSError as error:  # the address is taken
        _refuse_to_start(f"cannot listen on {settings.host}:{settings.port}: {error.strerror}")
    shown_host = f"[{settings.host}]" if ":" in settings.host else settings.host
    print(f"smartthumb API on http://{shown_host}:{settings.port}/ (docs at /docs)", flush=True)
    if not settings.api_tokens and not settings.loopback_only:
        print(
            "smartthumb-api: no SMARTTHUMB_API_TOKENS and SMARTTHUMB_ALLOW_ANONYMOUS=true: "
            "anyone who can reach this address may submit jobs",
            file=sys.stderr,
            flush=True,
        )
    if supervisor is not None:
        supervisor.run()
        return
    return_freed_memory()
    uvicorn.Server(server_config(app, settings)).run()


if __name__ == "__main__":
    main()
