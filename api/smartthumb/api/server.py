"""The HTTP server: uvicorn on httptools, with the request head guarded before the app sees
anything. A head must arrive within SMARTTHUMB_HEADER_TIMEOUT_S (else 408) and stay within
MAX_HEAD_BYTES and MAX_HEADERS (431) with a URL of at most MAX_URL_BYTES (414); a head that
does not parse gets 400. Every one of these answers is the API's JSON error shape, sent with
`Connection: close`: uvicorn's own are plain text and it sets no head limit or deadline.

A poll of an unchanged job (fastpath.NotModified) is answered 304 right here, from the head."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
from typing import Any

import httptools
import uvicorn
from smartthumb.api.errors import error_response
from smartthumb.api.fastpath import NotModified
from smartthumb.api.settings import ApiSettings
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

MAX_HEAD_BYTES = 64 * 1024
"""Request line and headers together: ample for any client of this API (no cookies)."""
MAX_HEADERS = 100
MAX_URL_BYTES = 8 * 1024


class _HeadRefused(Exception):
    """Raised in a parser callback to stop parsing; the refusal is already recorded."""


class _Answered:
    """In uvicorn's place for the request cycle of a request the protocol answered itself:
    complete, so the parser's body callbacks and the next request take it as done."""

    response_complete = True

    def __init__(self) -> None:
        self.message_event = asyncio.Event()


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline and size limits on each request head."""

    header_timeout_s: float = 10.0
    not_modified: NotModified | None = None
    """The ETag to answer a request's head 304 with, else None (server_config sets it)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._answered = _Answered()  # one per connection: it is never waited on, only set
        self._refusal: tuple[int, str, str] | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._start_head()  # a connection that never sends a head is closed at the deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._end_head()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._reading_head and not self.transport.is_closing():
            # The head is still incomplete: all of this chunk belonged to it. Counted here,
            # not in the callbacks, because httptools buffers a header until it is whole.
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse(
                    431, "headers_too_large", f"request headers exceed {MAX_HEAD_BYTES} bytes"
                )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._reading_head:  # the next request on a kept-alive connection
            self._start_head()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > MAX_URL_BYTES:
            self._refuse_parsing(414, "uri_too_long", f"the URL exceeds {MAX_URL_BYTES} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._head_size += len(name) + len(value) + 4
        if len(self.headers) > MAX_HEADERS:
            self._refuse_parsing(431, "headers_too_large", f"more than {MAX_HEADERS} headers")
        if self._head_size > MAX_HEAD_BYTES:
            self._refuse_parsing(
                431, "headers_too_large", f"request headers exceed {MAX_HEAD_BYTES} bytes"
            )

    def on_headers_complete(self) -> None:
        self._end_head()
        if not self._answered_not_modified():
            super().on_headers_complete()

    def _answered_not_modified(self) -> bool:
        """Answer 304 from the head when not_modified says so: only a plain keep-alive
        HTTP/1.1 GET while no earlier request on the connection is still being answered
        (pipelined answers keep their order)."""
        parser = self.parser
        if (
            self.not_modified is None
            or parser.get_method() != b"GET"
            or parser.get_http_version() != "1.1"
            or not parser.should_keep_alive()
            or parser.should_upgrade()
            or self.pipeline
            or not (self.cycle is None or self.cycle.response_complete)
        ):
            return False
        url = httptools.parse_url(self.url)
        if b"%" in url.path or url.query:
            return False
        path = url.path.decode("ascii")
        scope: dict[str, Any] = self.scope  # type: ignore[assignment]
        scope.update(
            method="GET",
            path=self.root_path + path,
            raw_path=self.root_path.encode("ascii") + url.path,
            query_string=b"",
        )
        etag = self.not_modified(scope)
        if etag is None:
            return False
        head = [b"HTTP/1.1 304 Not Modified\r\n"]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head.append(b"etag: %s\r\ncache-control: no-cache\r\n\r\n" % etag.encode("ascii"))
        self.transport.write(b"".join(head))
        self.cycle = self._answered  # type: ignore[assignment]
        self.on_response_complete()
        return True

    def send_400_response(self, msg: str) -> None:
        # uvicorn calls this for every parser error, ours (_refuse_parsing) included.
        status, code, message = self._refusal or (400, "bad_request", "malformed HTTP request")
        self._refuse(status, code, message)

    def _start_head(self) -> None:
        self._reading_head = True
        self._head_bytes = 0
        self._head_size = 0
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _end_head(self) -> None:
        self._reading_head = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._head_bytes == 0:
            self.transport.close()  # an idle connection: nothing to answer
            return
        self._refuse(
            408,
            "request_timeout",
            f"the request line and headers did not arrive within {self.header_timeout_s:g} s",
        )

    def _refuse_parsing(self, status: int, code: str, message: str) -> None:
        self._refusal = (status, code, message)
        raise _HeadRefused(message)

    def _refuse(self, status: int, code: str, message: str) -> None:
        self._end_head()
        response = error_response(status, code, message)
        content: list[bytes | memoryview] = [STATUS_LINE[status]]  # starlette: body may be a view
        for name, value in [*self.server_state.default_headers, *response.raw_headers]:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend([b"connection: close\r\n\r\n", response.body])
        self.transport.write(b"".join(content))
        self.transport.close()


def _protocol(
    header_timeout_s: float, not_modified: NotModified | None
) -> type[GuardedHttpToolsProtocol]:
    return type(
        "GuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {"header_timeout_s": header_timeout_s, "not_modified": not_modified},
    )


def server_config(app: Any, settings: ApiSettings, **overrides: Any) -> uvicorn.Config:
    """uvicorn's configuration for `app` under `settings`; `overrides` are uvicorn's own."""
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        # An access log lists every request: the protocol's own 304s would be missing from it.
        "http": _protocol(
            settings.header_timeout_s,
            None if settings.access_log else NotModified(app, settings.api_tokens),
        ),
        "proxy_headers": True,
        "timeout_graceful_shutdown": 60,
        "access_log": settings.access_log,
    }
    return uvicorn.Config(app, **{**options, **overrides})


M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8


def return_freed_memory() -> None:
    """Make glibc give large buffers back when they are freed: by default its mmap threshold
    grows up to 32 MiB after the first big free, and each request thread gets an arena, so
    an upload burst leaves hundreds of MiB held after it. A no-op on other C libraries."""
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is None or not hasattr(libc, "mallopt"):
        return
    libc.mallopt(M_MMAP_THRESHOLD, 1024 * 1024)
    libc.mallopt(M_ARENA_MAX, 2)
