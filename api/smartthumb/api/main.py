"""`smartthumb-api`: serve the API with uvicorn on SMARTTHUMB_HOST:SMARTTHUMB_PORT."""

from __future__ import annotations

import sys

import uvicorn
from smartthumb.api.app import create_app
from smartthumb.api.settings import ApiSettings
from smartthumb.operator.backend import BackendStartError


def main() -> None:
    settings = ApiSettings()
    try:
        app = create_app(settings)
    except BackendStartError as error:  # the user's settings or state: one line, not a trace
        print(f"smartthumb-api: {error}", file=sys.stderr)
        sys.exit(2)
    shown_host = f"[{settings.host}]" if ":" in settings.host else settings.host
    print(f"smartthumb API on http://{shown_host}:{settings.port}/ (docs at /docs)", flush=True)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        proxy_headers=True,
        timeout_graceful_shutdown=60,
        access_log=settings.access_log,
    )


if __name__ == "__main__":
    main()
