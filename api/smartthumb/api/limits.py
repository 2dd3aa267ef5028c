"""Request-body size limit, enforced before and while the body is read."""

from __future__ import annotations

from fastapi.responses import JSONResponse
from smartthumb.api.errors import error_response
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodySizeLimit:
    """Answers 413 for a declared Content-Length over the limit, and for a body (chunked, or
    longer than declared) that passes the limit while it streams."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    def _response(self) -> JSONResponse:
        message = f"request body is larger than the limit of {self.limit} bytes"
        return error_response(413, "payload_too_large", message)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._response()(scope, receive, send)
            return
        received = 0
        exceeded = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                # End the body here; whatever the route makes of the stub is replaced below.
                exceeded = True
                return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def guarded_send(message: Message) -> None:
            if not exceeded:
                await send(message)
            elif message["type"] == "http.response.start":
                await self._response()(scope, receive, send)

        await self.app(scope, counting_receive, guarded_send)
