"""Where things are: every URL the API hands out is built here.

Seeds 000 and 002 hand out absolute URLs; seeds 003 and 004 hand out paths that their
clients append to the host, so both forms exist.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import Depends, Request


class Links:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def absolute(self, path: str) -> str:
        return f"{self.base_url}{path}"

    @staticmethod
    def job(job_id: str) -> str:
        return f"/job/{job_id}"

    @staticmethod
    def image(job_id: str, **query: str | int) -> str:
        suffix = f"?{urlencode(query)}" if query else ""
        return f"/job/{job_id}/image{suffix}"

    @staticmethod
    def batch(batch_id: str) -> str:
        return f"/batches/{batch_id}"

    @staticmethod
    def simple_job(job_id: str) -> str:
        return f"/jobs/{job_id}"

    @staticmethod
    def download(job_id: str) -> str:
        return f"/jobs/{job_id}/download"

    @staticmethod
    def upload_status(job_id: str) -> str:
        return f"/upload/{job_id}/status"

    @staticmethod
    def upload_result(job_id: str) -> str:
        return f"/upload/{job_id}/result"


class LinkBases:
    """The Links of each base URL clients used, made once: Starlette's `base_url` builds and
    parses a URL per request, a large part of a status poll's cost."""

    KEPT = 256
    """Distinct (scheme, Host, root path) kept: a client may send any Host header."""

    def __init__(self, public_url: str | None) -> None:
        self._fixed = Links(public_url) if public_url else None
        self._made: dict[tuple[object, ...], Links] = {}

    def of(self, request: Request) -> Links:
        """SMARTTHUMB_PUBLIC_URL when configured (behind a proxy), else the URL the client
        used."""
        if self._fixed is not None:
            return self._fixed
        scope = request.scope
        key = (
            scope["scheme"],
            request.headers.get("host"),
            scope.get("server"),
            scope.get("root_path"),
        )
        links = self._made.get(key)
        if links is None:
            if len(self._made) >= self.KEPT:
                self._made.clear()
            links = self._made[key] = Links(str(request.base_url))
        return links


def links_for(request: Request) -> Links:
    bases: LinkBases = request.app.state.link_bases
    return bases.of(request)


async def get_links(request: Request) -> Links:
    return links_for(request)


LinksDep = Annotated[Links, Depends(get_links)]
