"""create_app(settings): the FastAPI application, with the backend started and stopped by
its lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib.metadata import version

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from smartthumb.api.auth import TokenAuth
from smartthumb.api.deps import BEARER
from smartthumb.api.documents import DocumentCache
from smartthumb.api.errors import install_error_handlers
from smartthumb.api.fastpath import FastPath
from smartthumb.api.limits import BodyGuard
from smartthumb.api.links import LinkBases
from smartthumb.api.routers import batches, health, jobs, metrics, thumbnail, uploads, web
from smartthumb.api.settings import ApiSettings
from smartthumb.operator.backend import Backend, create_backend
from starlette.concurrency import run_in_threadpool

DESCRIPTION = """\
Smart thumbnails as asynchronous jobs. Submit with `POST /thumbnail` (or a compatibility
route), follow `GET /job/{id}`, fetch `GET /job/{id}/image`.

Every error is `{"error": {"code", "message", "details"}}`. With `SMARTTHUMB_API_TOKENS`
set, send `Authorization: Bearer <token>` (all but health, the web page and these docs).
"""


def create_app(
    settings: ApiSettings | None = None,
    backend: Backend | None = None,
    metrics_source: Callable[[], bytes] | None = None,
) -> FastAPI:
    """The app on `backend`, else on the one SMARTTHUMB_BACKEND names (configured from the
    environment). `metrics_source`: where GET /metrics comes from, if not this process's registry."""
    settings = settings or ApiSettings()
    backend = backend or create_backend(settings.backend, settings.webhook_public_url())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(backend.start)
        app.state.backend = backend
        app.state.accepting = True
        try:
            yield
        finally:
            app.state.accepting = False
            # Graceful: running jobs finish, queued ones stay in the store for the next start.
            await run_in_threadpool(backend.stop, True)

    app = FastAPI(
        title="smartthumb",
        version=version("smartthumb-api"),
        description=DESCRIPTION,
        lifespan=lifespan,
        # No OpenTelemetry here (metrics are Prometheus'): its check cost every request
        # three environment lookups.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.metrics_source = metrics_source
    app.state.documents = DocumentCache()
    app.state.link_bases = LinkBases(
        settings.public_url if settings.public_url_configured else None
    )
    app.state.accepting = False
    app.add_middleware(FastPath)  # innermost: after authentication and the body's limits
    app.add_middleware(
        BodyGuard,
        limit=settings.max_upload_bytes,
        in_flight_limit=settings.max_in_flight_bytes,
        body_timeout_s=settings.body_timeout_s,
    )
    app.add_middleware(TokenAuth, tokens=settings.api_tokens)  # outermost: before any body
    install_error_handlers(app)

    app.include_router(health.router)
    app.include_router(web.router)
    app.mount("/static", StaticFiles(directory=web.STATIC_DIR), name="static")
    protected = [BEARER]
    for router in (thumbnail.router, uploads.router, batches.router, jobs.router, metrics.router):
        app.include_router(router, dependencies=protected)
    return app
