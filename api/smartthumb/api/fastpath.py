"""GET /job/{id} and GET /jobs/{id} without FastAPI's routing and dependency solving.

Status polls are most of the API's requests, and the framework's work per request (route
matching over every route, dependencies, validation of the query) cost several times the
answer itself. The routes in routers/ stay the documented definitions; both call the same
functions. Anything but the plain forms (an unknown query parameter, a `wait` that is not a
number) goes on to FastAPI, which validates it and answers as documented.
"""

from __future__ import annotations

import math
import re

from fastapi import Request
from smartthumb.api.errors import ApiError, error_response
from smartthumb.api.routers.jobs import simple_job_answer
from smartthumb.api.routers.thumbnail import job_answer
from starlette.types import ASGIApp, Receive, Scope, Send

_STATUS_PATH = re.compile(r"/(jobs?)/([^/]+)")


def _wait(query: bytes) -> float | None:
    """The `wait` of GET /job/{id}'s query (0 without one); None: FastAPI is to judge it."""
    if not query:
        return 0.0
    name, _, value = query.partition(b"=")
    if name != b"wait" or b"&" in value:
        return None
    try:
        wait = float(value)
    except ValueError:
        return None
    return wait if math.isfinite(wait) and wait >= 0 else None


class StatusFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            match = _STATUS_PATH.fullmatch(scope["path"])
            if match is not None:
                kind, job_id = match.groups()
                query = scope["query_string"]
                wait = _wait(query) if kind == "job" else (None if query else 0.0)
                if wait is not None:
                    request = Request(scope, receive)
                    try:
                        if kind == "job":
                            response = await job_answer(request, job_id, wait)
                        else:
                            response = await simple_job_answer(request, job_id)
                    except ApiError as error:
                        response = error_response(
                            error.status, error.code, error.message, headers=error.headers
                        )
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)
