"""Request-body size limit, enforced before and while the body is read."""

from __future__ import annotations

from smartthumb.api.errors import ApiError, error_response
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def _too_large(limit: int) -> str:
    return f"request body is larger than the limit of {limit} bytes"


class BodySizeLimit:
    """Answers 413 for a declared Content-Length over the limit, and stops a body (chunked or
    lying about its length) as soon as more than `limit` bytes have arrived."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            response = error_response(413, "payload_too_large", _too_large(self.limit))
            await response(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                # Raised inside the route's body read, so the ApiError handler answers it.
                raise ApiError(413, "payload_too_large", _too_large(self.limit))
            return message

        await self.app(scope, counting_receive, send)
