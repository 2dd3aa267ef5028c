"""Request-body limits, enforced before and while the body is read: one request's size, and
the bytes of all requests in flight together (bodies are held in memory while parsed)."""

from __future__ import annotations

from fastapi.responses import JSONResponse
from smartthumb.api.errors import error_response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

BUSY_RETRY_AFTER_S = "2"


class BodySizeLimit:
    """413 for a body over `limit` (declared, or found while it streams); 503 with
    Retry-After while the bodies in flight would pass `in_flight_limit`.

    The counters live on the event loop's thread, so they need no lock."""

    def __init__(self, app: ASGIApp, limit: int, in_flight_limit: int) -> None:
        self.app = app
        self.limit = limit
        self.in_flight_limit = in_flight_limit
        self.in_flight = 0

    def _too_large(self) -> JSONResponse:
        message = f"request body is larger than the limit of {self.limit} bytes"
        return error_response(413, "payload_too_large", message)

    def _busy(self) -> JSONResponse:
        message = "too many large uploads in progress; retry shortly"
        return error_response(
            503, "server_busy", message, headers={"Retry-After": BUSY_RETRY_AFTER_S}
        )

    def _reserve(self, size: int) -> bool:
        if self.in_flight + size > self.in_flight_limit:
            return False
        self.in_flight += size
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared_header = dict(scope["headers"]).get(b"content-length")
        declared = int(declared_header) if declared_header and declared_header.isdigit() else 0
        if declared > self.limit:
            await self._too_large()(scope, receive, send)
            return
        if not self._reserve(declared):
            await self._busy()(scope, receive, send)
            return
        reserved, received = declared, 0
        refusal: JSONResponse | None = None

        async def counting_receive() -> Message:
            nonlocal received, reserved, refusal
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                refusal = self._too_large()
            elif received > reserved:  # chunked, or longer than declared
                if self._reserve(received - reserved):
                    reserved = received
                else:
                    refusal = self._busy()
            if refusal is not None:
                # End the body here; whatever the route makes of the stub is replaced below.
                return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def guarded_send(message: Message) -> None:
            if refusal is None:
                await send(message)
            elif message["type"] == "http.response.start":
                await refusal(scope, receive, send)

        try:
            await self.app(scope, counting_receive, guarded_send)
        finally:
            self.in_flight -= reserved
