"""Sources and outputs at http(s) URLs (presigned object-storage URLs, user image URLs),
reached only through the SSRF guard (netguard) and within the runner's Limits.

Messages name a URL by netguard.redact(url): never its query, which holds the signature.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

import httpx
from smartthumb.runner.errors import BadInputError, RunnerError
from smartthumb.runner.limits import Limits
from smartthumb.runner.netguard import (
    GuardedTransport,
    RefusedAddress,
    RefusedURL,
    checked_address,
    redact,
)

MAX_REDIRECTS = 5

# No keep-alive: the transport connects to a pinned IP, so a pooled connection verified for
# one host name could otherwise serve another name at the same address.
_ONE_SHOT = httpx.Limits(max_keepalive_connections=0)


def prefix_pattern(prefix: str) -> re.Pattern[str]:
    """An allowed-sources entry as a regex: '*' matches anything but '/'. A bare origin
    gets its '/', so https://a.example.com does not also allow https://a.example.com.evil/."""
    if prefix.count("/") == 2:
        prefix += "/"
    return re.compile(
        "".join("[^/]*" if part == "*" else re.escape(part) for part in re.split(r"(\*)", prefix))
    )


def comparable(url: httpx.URL) -> str:
    """scheme://host[:port]/path as httpx normalised it: no user:password to fool a prefix."""
    path = url.raw_path.decode("ascii").split("?", 1)[0]
    return f"{url.scheme}://{url.netloc.decode('ascii')}{path}"


def allowed(patterns: list[re.Pattern[str]], url: httpx.URL) -> bool:
    """SMARTTHUMB_ALLOWED_SOURCES: no patterns allow every host."""
    return not patterns or any(pattern.match(comparable(url)) for pattern in patterns)


def refusal(error: RefusedURL | httpx.InvalidURL, where: str) -> BadInputError:
    if isinstance(error, RefusedAddress):
        return BadInputError(
            f"{where}: host {error.host!r} resolves to {error.address}, a non-public "
            "address (allow it with SMARTTHUMB_ALLOW_PRIVATE_SOURCES)"
        )
    return BadInputError(f"{where}: {error}")


def check_source(url: str, limits: Limits) -> None:
    """Raise BadInputError where the runner would refuse `url` before fetching it (the
    allow-list, a non-public address): the API asks at submit, so the client gets a 400
    instead of a failed job."""
    where = redact(url)
    try:
        parsed = httpx.URL(url)
        if not allowed([prefix_pattern(prefix) for prefix in limits.allowed_sources], parsed):
            raise BadInputError(f"{where}: not allowed by SMARTTHUMB_ALLOWED_SOURCES")
        checked_address(parsed, limits.allow_private_sources)
    except (RefusedURL, httpx.InvalidURL) as error:
        raise refusal(error, where) from None


class Web:
    """One run's HTTP client (created on first use, closed with the run)."""

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._allowed = [prefix_pattern(prefix) for prefix in limits.allowed_sources]
        self._client: httpx.Client | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def _http(self) -> httpx.Client:
        if self._client is None:
            transport = GuardedTransport(self._limits.allow_private_sources, limits=_ONE_SHOT)
            self._client = httpx.Client(transport=transport, follow_redirects=False)
        return self._client

    def get(self, url: str) -> bytes:
        """The body of `url`; BadInputError for every way that fails."""
        name = where = redact(url)
        deadline = time.monotonic() + self._limits.source_timeout_s
        try:
            request = self._http.build_request("GET", url)
            # Redirects are followed here, not by httpx, so that every hop passes the
            # allow-list and gets only what is left of the whole timeout; the transport
            # checks each hop's address.
            for hop in range(MAX_REDIRECTS + 1):
                if hop:
                    where = f"{name} (redirected to {redact(str(request.url))})"
                if not allowed(self._allowed, request.url):
                    raise BadInputError(f"{where}: not allowed by SMARTTHUMB_ALLOWED_SOURCES")
                self._time_left(request, deadline)
                response = self._http.send(request, stream=True)
                try:
                    if response.next_request is None:
                        return self._body(response, where, deadline)
                finally:
                    response.close()
                request = response.next_request
            raise BadInputError(f"{name}: more than {MAX_REDIRECTS} redirects")
        except (httpx.HTTPError, httpx.InvalidURL, RefusedURL) as error:
            raise self._failure(error, where, BadInputError) from None

    def put(self, url: str, data: bytes, media_type: str) -> None:
        """Upload `data` (a presigned PUT URL): a 4xx answer is bad input, a 5xx or a network
        failure an internal error (worth a retry). Redirects are not followed."""
        where = f"upload to {redact(url)}"
        try:
            request = self._http.build_request(
                "PUT", url, content=data, headers={"Content-Type": media_type}
            )
            self._time_left(request, time.monotonic() + self._limits.source_timeout_s)
            response = self._http.send(request)
        except (httpx.HTTPError, httpx.InvalidURL, RefusedURL) as error:
            raise self._failure(error, where, RunnerError) from None
        if not response.is_success:
            kind = BadInputError if response.is_client_error else RunnerError
            raise kind(f"{where}: {_status(response)}")

    def _time_left(self, request: httpx.Request, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise httpx.TimeoutException("whole download", request=request)
        request.extensions["timeout"] = httpx.Timeout(left).as_dict()

    def _body(self, response: httpx.Response, where: str, deadline: float) -> bytes:
        if not response.is_success:
            raise BadInputError(f"{where}: {_status(response)}")
        cap = self._limits.max_source_bytes
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > cap:
            raise BadInputError(
                f"{where}: {int(declared)} bytes, above the limit of {cap} "
                "(SMARTTHUMB_MAX_SOURCE_BYTES)"
            )
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():  # decoded: a gzip bomb counts at full size
            size += len(chunk)
            if size > cap:
                raise BadInputError(
                    f"{where}: larger than the limit of {cap} bytes (SMARTTHUMB_MAX_SOURCE_BYTES)"
                )
            chunks.append(chunk)
            # A read waits at most the time left when the hop began; a trickle is cut here.
            if time.monotonic() > deadline:
                raise httpx.TimeoutException("whole download", request=response.request)
        # bytes, not a bytearray: io.BytesIO shares bytes (no second copy while decoding).
        return b"".join(chunks)

    def _failure(self, error: Exception, where: str, kind: type[RunnerError]) -> RunnerError:
        if isinstance(error, RefusedURL | httpx.InvalidURL):
            return refusal(error, where)
        if isinstance(error, httpx.TimeoutException):
            return kind(
                f"{where}: not done within {self._limits.source_timeout_s:g} s "
                "(SMARTTHUMB_SOURCE_TIMEOUT_S)"
            )
        return kind(f"{where}: {type(error).__name__}: {error}")


def _status(response: httpx.Response) -> str:
    return f"HTTP {response.status_code} {response.reason_phrase}".rstrip()


@dataclass(eq=False)
class RemoteImage:
    """A source at a URL: fetched on first read, held until released (load.ByteSource)."""

    url: str
    web: Web
    _data: bytes | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return redact(self.url)

    def read(self) -> bytes:
        if self._data is None:
            self._data = self.web.get(self.url)
        return self._data

    def release(self) -> None:
        self._data = None


@dataclass
class RemoteOutput:
    """An output uploaded with PUT (encode.Upload)."""

    url: str
    web: Web

    def put(self, data: bytes, media_type: str) -> None:
        self.web.put(self.url, data, media_type)
