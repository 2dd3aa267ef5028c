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


async def get_links(request: Request) -> Links:
    """SMARTTHUMB_PUBLIC_URL when configured (behind a proxy), else the URL the client used."""
    return Links(request.app.state.public_url or str(request.base_url))


LinksDep = Annotated[Links, Depends(get_links)]
