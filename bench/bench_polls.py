"""The API process's CPU per status poll, over real HTTP, by the way the poll is answered.

    .venv/bin/python bench/bench_polls.py [--polls 5000] [--rounds 5]

One `smartthumb-api` (SMARTTHUMB_API_PROCESSES=1), one finished job, 10 keep-alive clients
polling it back to back. Three kinds of poll of the same job, in the same run:

- `GET /jobs/{id}` with the ETag the client holds: answered 304 by the HTTP protocol itself
  (fastpath.NotModified), before any ASGI machinery;
- `GET /job/{id}` with its ETag: 304 too, but through the ASGI app (middleware and the app's
  own fast path), which is what every 304 cost before: the comparison;
- `GET /jobs/{id}` without a tag: 200 with the document, through the app.

Prints the median over `--rounds` of the API process's user + system CPU per poll, and the
ratio of each to the 304 through the app.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import statistics
import tempfile
from pathlib import Path

import aiohttp
from bench_http import one_pixel_png, start_server, tree_cpu_s

CLIENTS = 10


async def _poll(client: aiohttp.ClientSession, path: str, headers: dict[str, str], n: int) -> None:
    for _ in range(n):
        async with client.get(path, headers=headers) as response:
            await response.read()
            assert response.status in (200, 304), response.status


async def measure(url: str, pid: int, polls: int, rounds: int) -> dict[str, list[float]]:
    body = {
        "image_data": base64.b64encode(one_pixel_png()).decode(),
        "operation": "resize",
        "width": 20,
        "height": 20,
    }
    async with aiohttp.ClientSession(url) as client:
        async with client.post("/jobs", json=body) as response:
            job_id = (await response.json())["job_id"]
        async with client.get(f"/job/{job_id}", params={"wait": 30}) as response:
            await response.read()
        kinds = {}
        for label, path in (
            ("GET /jobs/{id}, 304 (in the protocol)", f"/jobs/{job_id}"),
            ("GET /job/{id}, 304 (through the app)", f"/job/{job_id}"),
        ):
            async with client.get(path) as response:
                kinds[label] = (path, {"If-None-Match": response.headers["ETag"]})
        kinds["GET /jobs/{id}, 200 (through the app)"] = (f"/jobs/{job_id}", {})
        spent: dict[str, list[float]] = {label: [] for label in kinds}
        for _ in range(rounds):
            for label, (path, headers) in kinds.items():
                before, _ = tree_cpu_s(pid)
                each = polls // CLIENTS
                await asyncio.gather(*(_poll(client, path, headers, each) for _ in range(CLIENTS)))
                after, _ = tree_cpu_s(pid)
                spent[label].append((after - before) * 1e6 / (each * CLIENTS))
        return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--polls", type=int, default=5000, help="polls of each kind per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="smartthumb-bench-") as scratch:
        process, url = start_server(Path(scratch), workers=1, processes=1, cpus=None)
        try:
            spent = asyncio.run(measure(url, process.pid, args.polls, args.rounds))
        finally:
            process.terminate()
            process.wait(timeout=60)
    medians = {label: statistics.median(values) for label, values in spent.items()}
    baseline = medians["GET /job/{id}, 304 (through the app)"]
    print(f"{'poll':40} {'API us/poll':>11} {'ratio':>6}")
    print("-" * 59)
    for label, value in medians.items():
        print(f"{label:40} {value:11.1f} {value / baseline:6.2f}")


if __name__ == "__main__":
    main()
