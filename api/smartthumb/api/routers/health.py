"""Health and readiness: open even when bearer tokens are configured."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from smartthumb.api.deps import EngineDep
from smartthumb.api.schemas.health import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, summary="Liveness and queue figures")
@router.get("/healthz", response_model=Health, summary="Liveness and queue figures")
def health(engine: EngineDep) -> Health:
    return Health(queue=engine.stats())


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready."}},
    summary="Ready to accept jobs",
)
def ready(request: Request, engine: EngineDep) -> Readiness | JSONResponse:
    if not request.app.state.accepting:
        return _not_ready("starting or shutting down")
    try:
        engine.stats()  # proves the store answers
    except Exception as error:  # noqa: BLE001 - any failure means "not ready", with the reason
        return _not_ready(f"store unavailable: {type(error).__name__}")
    if not engine.healthy():
        return _not_ready("the runner fork server or an engine thread is down")
    return Readiness(ready=True)


def _not_ready(reason: str) -> JSONResponse:
    return JSONResponse(Readiness(ready=False, reason=reason).model_dump(), status_code=503)
