"""JSON answers: serialised by orjson, status documents made once per job revision and sent
with an ETag, so that a client polling with If-None-Match gets 304 until the job changes."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import Request, Response
from smartthumb.api.links import Links
from smartthumb.operator.models import Job

JSON = "application/json"
CACHED_DOCUMENTS = 20_000
"""Documents kept (a few KB each); past it the oldest go first."""

Document = dict[str, Any]


def dumps(content: object) -> bytes:
    # OPT_UTC_Z: UTC times end in Z, as pydantic writes them.
    return orjson.dumps(content, option=orjson.OPT_UTC_Z)


def json_response(content: object, status_code: int = 200) -> Response:
    return Response(dumps(content), status_code=status_code, media_type=JSON)


class DocumentCache:
    """The documents made of each job, per kind of document, keyed by the job's revision and
    the base of the links in them (which may follow the URL a client used). Used from the
    event loop only."""

    def __init__(self, size: int = CACHED_DOCUMENTS) -> None:
        self._size = size
        self._entries: dict[tuple[str, str], tuple[int, str, Document]] = {}

    def get(
        self, kind: str, job: Job, links: Links, make: Callable[[Job, Links], Document]
    ) -> Document:
        """The document `make(job, links)`, made once per revision. A job without a revision
        (a backend that cannot tell) gets a fresh one each time."""
        key = (kind, job.id)
        held = self._entries.get(key)
        if held is not None and held[0] == job.revision and held[1] == links.base_url:
            return held[2]
        document = make(job, links)
        if job.revision is not None:
            self._entries.pop(key, None)
            while len(self._entries) >= self._size:
                del self._entries[next(iter(self._entries))]
            self._entries[key] = (job.revision, links.base_url, document)
        return document


def _matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110's weak comparison against every tag the client listed, or `*`."""
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


def conditional_response(request: Request, document: Document) -> Response:
    """`document` with an ETag of its bytes; 304 without a body when the client has it."""
    body = dumps(document)
    etag = f'"{hashlib.blake2b(body, digest_size=12).hexdigest()}"'
    # no-cache: a cache may keep it, but asks again (with If-None-Match) before reusing it.
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None and _matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=JSON, headers=headers)


def get_documents(request: Request) -> DocumentCache:
    cache: DocumentCache = request.app.state.documents
    return cache
