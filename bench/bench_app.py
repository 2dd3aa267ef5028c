"""CPU of the API's hottest requests in the app alone (no HTTP, no uvicorn): the fast path
(`fastpath.FastPath`) against the same app with it taken out (FastAPI's routing, dependencies
and validation), in one run.

    .venv/bin/python bench/bench_app.py [--requests 300] [--repeat 5]

Requests go straight into the ASGI app. The local engine is not started, so submitted jobs
stay queued and the figure is the API's work alone: decoding, checking, writing the input and
the row. Each row gives the median of `--repeat` rounds of CPU (user + system) per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import tempfile
from pathlib import Path

from fastapi import FastAPI
from smartthumb.api.app import create_app
from smartthumb.api.fastpath import FastPath
from smartthumb.api.settings import ApiSettings
from smartthumb.operator.local import EngineSettings, LocalEngine
from starlette.types import Message

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_http import one_pixel_png, photo_jpeg, seed_002_body


def make_app(data_dir: Path, fast: bool) -> FastAPI:
    engine = LocalEngine(EngineSettings(data_dir=data_dir, queue_capacity=1_000_000))
    app = create_app(ApiSettings(), engine)
    if not fast:
        app.user_middleware = [m for m in app.user_middleware if m.cls is not FastPath]
    app.state.backend = engine  # what the lifespan sets, without starting the engine
    return app


def scope(method: str, path: str, body: bytes, headers: dict[str, str]) -> dict:
    raw = [(name.encode(), value.encode()) for name, value in headers.items()]
    if body:
        raw.append((b"content-length", str(len(body)).encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bench"), *raw],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }


async def call(app: FastAPI, request: dict, body: bytes) -> tuple[int, bytes]:
    """The response's status and body."""
    given = False

    async def receive() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    status, answer = 0, []

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        else:
            answer.append(message.get("body", b""))

    await app(dict(request), receive, send)
    return status, b"".join(answer)


def cpu_ms() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return (usage.ru_utime + usage.ru_stime) * 1000


async def measure(
    app: FastAPI, request: dict, body: bytes, expected: int, requests: int, repeat: int
) -> float:
    """Median CPU ms per request over `repeat` rounds of `requests`."""
    rounds = []
    for _ in range(repeat + 1):  # the first round warms up
        start = cpu_ms()
        for _ in range(requests):
            status, answer = await call(app, request, body)
            assert status == expected, (status, answer)
        rounds.append((cpu_ms() - start) / requests)
    return statistics.median(rounds[1:])


async def run(requests: int, repeat: int) -> list[tuple[str, float, float]]:
    json_type = {"content-type": "application/json"}
    png, jpeg = seed_002_body(one_pixel_png()), seed_002_body(photo_jpeg((1920, 1080)))
    rows = []
    with tempfile.TemporaryDirectory(prefix="smartthumb-bench-app-") as scratch:
        apps = [make_app(Path(scratch) / name, fast) for name, fast in (("a", True), ("b", False))]
        polled = []
        for app in apps:  # a queued job in each, for the status polls
            _, answer = await call(app, scope("POST", "/jobs", png, json_type), png)
            polled.append(json.loads(answer)["job_id"])
        for name, method, body, expected in (
            ("POST /jobs, 1x1 PNG", "POST", png, 202),
            ("POST /jobs, JPEG 1920x1080", "POST", jpeg, 202),
            ("GET /jobs/{id}", "GET", b"", 200),
        ):
            figures = []
            for app, job_id in zip(apps, polled, strict=True):
                path = "/jobs" if method == "POST" else f"/jobs/{job_id}"
                request = scope(method, path, body, json_type if body else {})
                figures.append(await measure(app, request, body, expected, requests, repeat))
            rows.append((name, *figures))
        for app in apps:
            app.state.backend.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rows = asyncio.run(run(args.requests, args.repeat))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nsmartthumb API in the app alone - {os.cpu_count()} CPUs, CPU ms per request")
    head = f"{'request':<28} {'fast path':>10} {'FastAPI route':>14} {'ratio':>6}"
    print(head)
    print("-" * len(head))
    for name, fast_ms, route_ms in rows:
        print(f"{name:<28} {fast_ms:>10.3f} {route_ms:>14.3f} {fast_ms / route_ms:>6.2f}")
    print(f"peak RSS {peak:.0f} MiB")


if __name__ == "__main__":
    main()
