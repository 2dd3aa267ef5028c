"""Bearer-token authentication, as ASGI middleware: a request without a valid token is
answered 401 from its headers alone, before any of its body is read or counted against the
upload budget (a router dependency would run only after FastAPI had read the body)."""

from __future__ import annotations

import hmac

from smartthumb.api.errors import error_response
from smartthumb.api.limits import header, refuse
from starlette.types import ASGIApp, Receive, Scope, Send

OPEN_PATHS = frozenset(
    {
        "/health",
        "/healthz",
        "/readyz",
        "/",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        "/openapi.json",
    }
)
"""Health, the web page's shell and the API docs: they hold no job data."""
OPEN_PREFIXES = ("/static/",)
REFUSED_BODY_DRAIN = 1024 * 1024
"""What of a refused client's body is read and dropped so it can read its 401 (no more:
it has not authenticated)."""


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def refusal(scope: Scope, tokens: list[bytes]) -> str | None:
    """Why the request may not have `scope["path"]` (None: it may): no tokens configured, an
    open path, or `Authorization: Bearer <one of tokens>` let it through."""
    if not tokens or is_open(scope["path"]):
        return None
    authorization = header(scope, b"authorization")
    if authorization is None:
        return "missing bearer token"
    scheme, _, offered = authorization.partition(b" ")
    if scheme.lower() != b"bearer" or not offered.strip():
        return "the Authorization header must be `Bearer <token>`"
    # Compare against every token so the time taken does not reveal which one matched.
    matches = [hmac.compare_digest(offered.strip(), token) for token in tokens]
    return None if any(matches) else "invalid bearer token"


class TokenAuth:
    """401 unless `Authorization: Bearer <one of tokens>`; everything is open without tokens."""

    def __init__(self, app: ASGIApp, tokens: list[str]) -> None:
        self.app = app
        self.tokens = [token.encode() for token in tokens]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            problem = refusal(scope, self.tokens)
            if problem is not None:
                response = error_response(
                    401, "unauthorized", problem, headers={"WWW-Authenticate": "Bearer"}
                )
                await refuse(response, scope, receive, send, REFUSED_BODY_DRAIN)
                return
        await self.app(scope, receive, send)
