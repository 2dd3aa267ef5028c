"""Health and readiness: open even when bearer tokens are configured."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from smartthumb.api.deps import BackendDep
from smartthumb.api.schemas.health import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, summary="Liveness and queue figures")
@router.get("/healthz", response_model=Health, summary="Liveness and queue figures")
def health(backend: BackendDep) -> Health:
    return Health(queue=backend.stats())


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready."}},
    summary="Ready to accept jobs",
)
def ready(request: Request, backend: BackendDep) -> Readiness | JSONResponse:
    if not request.app.state.accepting:
        return _not_ready("starting or shutting down")
    reason = backend.unready_reason()
    if reason is not None:
        return _not_ready(reason)
    return Readiness(ready=True)


def _not_ready(reason: str) -> JSONResponse:
    return JSONResponse(Readiness(ready=False, reason=reason).model_dump(), status_code=503)
