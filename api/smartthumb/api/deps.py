"""Dependencies shared by the routers: settings, the backend, the bearer-token scheme.

They are `async def` because none of them blocks: FastAPI runs a plain `def` dependency in
its thread pool, and a thread hop per dependency per request was most of the API's CPU."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPBearer
from smartthumb.api.settings import ApiSettings
from smartthumb.operator.backend import Backend


async def get_settings(request: Request) -> ApiSettings:
    return request.app.state.settings


async def get_backend(request: Request) -> Backend:
    return request.app.state.backend


SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
BackendDep = Annotated[Backend, Depends(get_backend)]

BEARER = Depends(HTTPBearer(auto_error=False, description="One of SMARTTHUMB_API_TOKENS."))
"""Declares the token in the OpenAPI document; auth.TokenAuth enforces it before the body."""
