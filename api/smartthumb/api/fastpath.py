"""The API's hottest requests without FastAPI's routing, dependency solving and validation
machinery: the status polls GET /job/{id} and GET /jobs/{id}, and seed 002's submit, POST
/jobs with a JSON body.

Status polls are most of the API's requests, and the framework's work per request (route
matching over every route, dependencies, validation of the query) cost several times the
answer itself; for a submit it was about a third of the request's CPU. The routes in routers/
stay the documented definitions; both call the same functions. Anything but the plain forms
(an unknown query parameter, a `wait` that is not a number, a body that is not a valid
request) goes on to FastAPI, which validates it and answers as documented.

The commonest request of all, a client polling GET /jobs/{id} with the ETag it holds while
the job has not changed, is answered 304 earlier still, by NotModified in the HTTP protocol
(server.py): no ASGI scope, task or middleware, a third less CPU than through them
(bench/bench_polls.py).
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

import orjson
from fastapi import Request
from pydantic import ValidationError
from smartthumb.api.auth import refusal
from smartthumb.api.documents import etag_matches
from smartthumb.api.errors import ApiError, error_response
from smartthumb.api.limits import header
from smartthumb.api.routers.jobs import accept_simple_job, simple_document, simple_job_answer
from smartthumb.api.routers.thumbnail import job_answer
from smartthumb.api.schemas.jobs import SimpleJobRequest
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from fastapi import FastAPI

_STATUS_PATH = re.compile(r"/(jobs?)/([^/]+)")
_SUBMIT_PATH = "/jobs"
INLINE_SUBMIT_BYTES = 64 * 1024
"""A submit body up to this size, to a backend that submits locally, is decoded and queued
on the event loop: well under a millisecond, less than the hop to a thread and back costs
(with one API process, API CPU per job of seed 002's 1x1 PNG: 3.45 -> 2.7 ms)."""


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


def _is_json(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.partition(b";")[0].strip().lower() == b"application/json"
    return False


async def _body(receive: Receive) -> bytes | None:
    """The whole body (BodyGuard, outside, has bounded it); None when the client left."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """`receive` for FastAPI, with the body already read given back first."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _simple_job_request(body: bytes) -> SimpleJobRequest | None:
    """The request when `body` is a valid one; None: FastAPI is to judge it (its 422 says
    what is wrong, field by field)."""
    try:
        return SimpleJobRequest.model_validate(orjson.loads(body))
    except (orjson.JSONDecodeError, ValidationError):
        return None


class FastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if scope["method"] == "GET":
                match = _STATUS_PATH.fullmatch(scope["path"])
                if match is not None and await self._status(scope, receive, send, *match.groups()):
                    return
            elif scope["method"] == "POST" and scope["path"] == _SUBMIT_PATH and _is_json(scope):
                await self._submit(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _status(
        self, scope: Scope, receive: Receive, send: Send, kind: str, job_id: str
    ) -> bool:
        """Answer a plain status poll; False: not one, for FastAPI."""
        query = scope["query_string"]
        wait = _wait(query) if kind == "job" else (None if query else 0.0)
        if wait is None:
            return False
        request = Request(scope, receive)
        try:
            if kind == "job":
                response = await job_answer(request, job_id, wait)
            else:
                response = await simple_job_answer(request, job_id)
        except ApiError as error:
            response = _error(error)
        await response(scope, receive, send)
        return True

    async def _submit(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _body(receive)
        if body is None:
            return
        parsed = _simple_job_request(body)
        if parsed is None:
            await self.app(scope, _replay(body, receive), send)
            return
        request = Request(scope, receive)
        try:
            if len(body) <= INLINE_SUBMIT_BYTES and request.app.state.backend.submits_locally:
                response = accept_simple_job(request, parsed)
            else:
                # One thread hop, as FastAPI makes for the route: decoding a large body and
                # the backend's submit (a request to the engine's process, or to the
                # Kubernetes API server) may take a while.
                response = await run_in_threadpool(accept_simple_job, request, parsed)
        except ApiError as error:
            response = _error(error)
        await response(scope, receive, send)


class NotModified:
    """For the HTTP protocol: the ETag to answer 304 with when the request (its scope: method,
    path, query and headers, no body) is a plain GET /jobs/{id} whose If-None-Match holds the
    job's current document, with a token that TokenAuth would let through. None for anything
    else, which goes through the app as usual (and gets its 401, 404 or 200 there)."""

    def __init__(self, app: FastAPI, tokens: list[str]) -> None:
        self._app = app
        self._tokens = [token.encode() for token in tokens]

    def __call__(self, scope: Scope) -> str | None:
        match = _STATUS_PATH.fullmatch(scope["path"])
        if match is None or match[1] != "jobs" or scope["query_string"]:
            return None
        if_none_match = header(scope, b"if-none-match")
        backend = getattr(self._app.state, "backend", None)  # None until the app has started
        if if_none_match is None or backend is None or refusal(scope, self._tokens) is not None:
            return None
        job = backend.get(match[2])
        if job is None:
            return None
        rendered = simple_document(Request({**scope, "app": self._app}), job)
        return (
            rendered.etag if etag_matches(if_none_match.decode("latin-1"), rendered.etag) else None
        )


def _error(error: ApiError) -> Response:
    return error_response(error.status, error.code, error.message, headers=error.headers)
