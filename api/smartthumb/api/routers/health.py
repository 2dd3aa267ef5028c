"""Health and readiness: open even when bearer tokens are configured."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from smartthumb.api.deps import BackendDep
from smartthumb.api.documents import model_response
from smartthumb.api.schemas.health import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, summary="Liveness and queue figures")
@router.get("/healthz", response_model=Health, summary="Liveness and queue figures")
def health(backend: BackendDep) -> Response:
    return model_response(Health(queue=backend.stats()))


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready."}},
    summary="Ready to accept jobs",
)
def ready(request: Request, backend: BackendDep) -> Response:
    if not request.app.state.accepting:
        return _not_ready("starting or shutting down")
    reason = backend.unready_reason()
    if reason is not None:
        return _not_ready(reason)
    return model_response(Readiness(ready=True))


def _not_ready(reason: str) -> Response:
    return model_response(Readiness(ready=False, reason=reason), status_code=503)
