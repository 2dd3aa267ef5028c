"""Dependencies shared by the routers: settings, the backend, bearer-token auth.

They are `async def` because none of them blocks: FastAPI runs a plain `def` dependency in
its thread pool, and a thread hop per dependency per request was most of the API's CPU."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from smartthumb.api.errors import ApiError
from smartthumb.api.settings import ApiSettings
from smartthumb.operator.backend import Backend


async def get_settings(request: Request) -> ApiSettings:
    return request.app.state.settings


async def get_backend(request: Request) -> Backend:
    return request.app.state.backend


SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
BackendDep = Annotated[Backend, Depends(get_backend)]

_bearer = HTTPBearer(auto_error=False, description="One of SMARTTHUMB_API_TOKENS.")


async def require_token(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Checks the bearer token when tokens are configured; open otherwise."""
    if not settings.api_tokens:
        return
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        raise ApiError(401, "unauthorized", "missing bearer token", challenge)
    offered = credentials.credentials.encode()
    # Compare against every token so the time taken does not reveal which one matched.
    matches = [hmac.compare_digest(offered, token.encode()) for token in settings.api_tokens]
    if not any(matches):
        raise ApiError(401, "unauthorized", "invalid bearer token", challenge)
