"""Request bodies are read in full, within limits, before the app sees them.

A body is spooled (to a temporary file past SPOOL_IN_MEMORY) as it arrives: 413 past one
request's limit, 503 with Retry-After while the bodies in flight would pass theirs (bytes
are counted as they arrive, not as declared), 408 when the whole body takes longer than the
body deadline. Only a complete body is handed on, so the app never parses a partial one,
and large bodies are handled a few at a time (LARGE_BODIES): parsing one holds several
copies of it at once (JSON text, its string, the decoded image; a multipart file read back).
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from tempfile import SpooledTemporaryFile

import anyio
from fastapi.responses import JSONResponse
from smartthumb.api.errors import error_response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

BUSY_RETRY_AFTER_S = "2"
SPOOL_IN_MEMORY = 1024 * 1024
REPLAY_CHUNK = 256 * 1024
LARGE_BODIES = 2
"""Requests with a body past SPOOL_IN_MEMORY handled at once; the others wait, their bodies
on disk, not in memory."""
DRAIN_S = 10.0
"""Longest a refused client's remaining body is read and dropped: closing a connection
with unread data resets it, and the client may then never read the answer."""
DRAIN_IDLE_S = 1.0
"""A refused client that sends nothing for this long is not waited for."""


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


async def refuse(
    response: JSONResponse, scope: Scope, receive: Receive, send: Send, drain_limit: int
) -> None:
    """Answers `response` and closes the connection, first dropping up to `drain_limit`
    bytes (for DRAIN_S at most) of the body the client is still sending."""
    headers = [*response.raw_headers, (b"connection", b"close")]
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": response.body, "more_body": True})
    # A client that asked for 100-continue has sent no body, and now will not.
    if drain_limit > 0 and header(scope, b"expect") is None:
        drained = 0
        with anyio.move_on_after(DRAIN_S):
            while drained <= drain_limit:
                with anyio.move_on_after(DRAIN_IDLE_S) as idle:
                    message = await receive()
                if idle.cancelled_caught:
                    break
                drained += len(message.get("body", b""))
                if message["type"] == "http.disconnect" or not message.get("more_body"):
                    break
    await send({"type": "http.response.body", "body": b""})


class _Refused(Exception):
    def __init__(self, response: JSONResponse, drain: bool = True) -> None:
        self.response = response
        self.drain = drain


class _Disconnected(Exception):
    pass


class BodyGuard:
    """See the module's docstring. The counters live on the event loop's thread, so they
    need no lock."""

    def __init__(
        self, app: ASGIApp, limit: int, in_flight_limit: int, body_timeout_s: float
    ) -> None:
        self.app = app
        self.limit = limit
        self.in_flight_limit = in_flight_limit
        self.body_timeout_s = body_timeout_s
        self.in_flight = 0
        self._large_bodies: anyio.Semaphore | None = None  # made on the event loop

    def _too_large(self) -> _Refused:
        message = f"request body is larger than the limit of {self.limit} bytes"
        return _Refused(error_response(413, "payload_too_large", message))

    def _busy(self) -> _Refused:
        message = "too many large uploads in progress; retry shortly"
        headers = {"Retry-After": BUSY_RETRY_AFTER_S}
        return _Refused(error_response(503, "server_busy", message, headers=headers))

    def _too_slow(self) -> _Refused:
        message = f"the request body did not arrive within {self.body_timeout_s:g} s"
        return _Refused(error_response(408, "request_timeout", message), drain=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = header(scope, b"content-length") if scope["type"] == "http" else None
        chunked = scope["type"] == "http" and header(scope, b"transfer-encoding") is not None
        if not chunked and (declared is None or declared in (b"", b"0")):
            await self.app(scope, receive, send)  # no body: nothing to guard
            return
        reserved = 0
        try:
            with SpooledTemporaryFile(SPOOL_IN_MEMORY) as spool:
                try:
                    if declared is not None and declared.isdigit() and int(declared) > self.limit:
                        raise self._too_large()
                    reserved = await self._spool(receive, spool)
                except _Refused as refusal:
                    drain = self.limit if refusal.drain else 0
                    await refuse(refusal.response, scope, receive, send, drain)
                    return
                except _Disconnected:
                    return
                await self._replay(scope, spool, receive, send)
        finally:
            self.in_flight -= reserved

    async def _spool(self, receive: Receive, spool: SpooledTemporaryFile[bytes]) -> int:
        """The whole body into `spool`; returns the bytes reserved for it (the caller frees
        them), or raises _Refused (having freed them) or _Disconnected."""
        reserved = 0
        try:
            with anyio.fail_after(self.body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise _Disconnected
                    chunk = message.get("body", b"")
                    if reserved + len(chunk) > self.limit:
                        raise self._too_large()
                    if self.in_flight + len(chunk) > self.in_flight_limit:
                        raise self._busy()
                    self.in_flight += len(chunk)
                    reserved += len(chunk)
                    spool.write(chunk)
                    if not message.get("more_body", False):
                        return reserved
        except TimeoutError:
            self.in_flight -= reserved
            raise self._too_slow() from None
        except (_Refused, _Disconnected):
            self.in_flight -= reserved
            raise

    async def _replay(
        self, scope: Scope, spool: SpooledTemporaryFile[bytes], receive: Receive, send: Send
    ) -> None:
        size = spool.tell()
        spool.seek(0)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:  # after the body: what the client does next (its disconnect)
                return await receive()
            chunk = spool.read(REPLAY_CHUNK)
            replayed = spool.tell() >= size
            return {"type": "http.request", "body": chunk, "more_body": not replayed}

        async with AsyncExitStack() as stack:
            if size > SPOOL_IN_MEMORY:
                if self._large_bodies is None:
                    self._large_bodies = anyio.Semaphore(LARGE_BODIES)
                await stack.enter_async_context(self._large_bodies)
            await self.app(scope, replay, send)
