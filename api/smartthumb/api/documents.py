"""JSON answers: serialised by orjson, status documents made once per job revision and sent
with an ETag, so that a client polling with If-None-Match gets 304 until the job changes."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, NamedTuple

import orjson
from fastapi import Request, Response
from pydantic import BaseModel
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


def model_response(model: BaseModel, status_code: int = 200) -> Response:
    """A response model built from the backend's data, serialised once: returned as it is,
    FastAPI would dump it, validate the dump against the same model and serialise that."""
    return Response(model.model_dump_json(by_alias=True), status_code=status_code, media_type=JSON)


class Rendered(NamedTuple):
    body: bytes
    etag: str


def render(document: Document) -> Rendered:
    body = dumps(document)
    return Rendered(body, f'"{hashlib.blake2b(body, digest_size=12).hexdigest()}"')


class _Entry(NamedTuple):
    revision: int
    base_url: str
    document: Document
    changing: Document
    rendered: Rendered


class DocumentCache:
    """The documents made of each job, per kind of document, keyed by the job's revision and
    the base of the links in them (which may follow the URL a client used), with their bytes
    and ETag. Used from the event loop only."""

    def __init__(self, size: int = CACHED_DOCUMENTS) -> None:
        self._size = size
        self._entries: dict[tuple[str, str], _Entry] = {}

    def render(
        self,
        kind: str,
        job: Job,
        links: Links,
        make: Callable[[Job, Links], Document],
        changing: Document | None = None,
    ) -> Rendered:
        """The document `make(job, links)` updated with `changing` (fields that change
        without a new revision: queue position, expiry), made once per revision and
        serialised again only when `changing` does. A job without a revision (a backend
        that cannot tell) is made afresh each time."""
        changing = changing or {}
        key = (kind, job.id)
        held = self._entries.get(key)
        if held is not None and held.revision == job.revision and held.base_url == links.base_url:
            if held.changing == changing:
                return held.rendered
            document = held.document
        else:
            document = make(job, links)
        rendered = render({**document, **changing})
        if job.revision is not None:
            self._entries.pop(key, None)
            while len(self._entries) >= self._size:
                del self._entries[next(iter(self._entries))]
            self._entries[key] = _Entry(job.revision, links.base_url, document, changing, rendered)
        return rendered


def etag_matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110's weak comparison against every tag the client listed, or `*`."""
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


def conditional_response(request: Request, rendered: Rendered) -> Response:
    """The document with its ETag; 304 without a body when the client has it."""
    # no-cache: a cache may keep it, but asks again (with If-None-Match) before reusing it.
    headers = {"ETag": rendered.etag, "Cache-Control": "no-cache"}
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None and etag_matches(if_none_match, rendered.etag):
        return Response(status_code=304, headers=headers)
    return Response(rendered.body, media_type=JSON, headers=headers)
