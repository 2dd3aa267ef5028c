"""`smartthumb-api`: serve the API with uvicorn on SMARTTHUMB_HOST:SMARTTHUMB_PORT."""

from __future__ import annotations

import uvicorn
from smartthumb.api.app import create_app
from smartthumb.api.settings import ApiSettings


def main() -> None:
    settings = ApiSettings()
    shown_host = f"[{settings.host}]" if ":" in settings.host else settings.host
    print(f"smartthumb API on http://{shown_host}:{settings.port}/ (docs at /docs)", flush=True)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        proxy_headers=True,
        timeout_graceful_shutdown=60,
        access_log=settings.access_log,
    )


if __name__ == "__main__":
    main()
