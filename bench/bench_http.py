"""HTTP benchmarks of the seeds' workloads against a real `smartthumb-api` process.

- seed 002: 50 concurrent POST /jobs resizing a 1920x1080 JPEG to 200x200, and the same with
  a 1x1 PNG (what seed 002's own script measured: job overhead, not image work);
- seed 001: 10 concurrent POST /upload (multipart) -> 300x300, all done.

Clock: from the first submit to the last job seen done (GET /job/{id}?wait= long-polls, so
"done" is seen within milliseconds). Latency of a job: its submit to its done. RSS: peak of
the API process (VmHWM) and the peak sum over it and its runner processes (sampled).

    .venv/bin/python bench/bench_http.py [--workers N] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
import httpx
from PIL import Image
from skimage import data

OUT = Path(__file__).resolve().parent / "out"


@dataclass
class Row:
    scenario: str
    jobs: int
    wall_s: float
    jobs_per_s: float
    median_ms: float
    p95_ms: float
    failed: int


def photo_jpeg(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()).resize(size, Image.Resampling.BICUBIC).save(
        buffer, "JPEG", quality=90
    )
    return buffer.getvalue()


def one_pixel_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1), "white").save(buffer, "PNG")
    return buffer.getvalue()


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


async def wait_done(client: aiohttp.ClientSession, job_id: str) -> str:
    while True:
        async with client.get(f"/job/{job_id}", params={"wait": 30}) as response:
            response.raise_for_status()
            status = (await response.json())["status"]
        if status in ("done", "failed"):
            return status


async def measure(
    name: str, client: aiohttp.ClientSession, count: int, submit: Callable[[], Awaitable[str]]
) -> Row:
    async def one() -> tuple[float, str]:
        started = time.perf_counter()
        job_id = await submit()
        status = await wait_done(client, job_id)
        return time.perf_counter() - started, status

    began = time.perf_counter()
    outcomes = await asyncio.gather(*(one() for _ in range(count)))
    wall = time.perf_counter() - began
    latencies = [seconds * 1000 for seconds, _ in outcomes]
    return Row(
        scenario=name,
        jobs=count,
        wall_s=round(wall, 3),
        jobs_per_s=round(count / wall, 1),
        median_ms=round(statistics.median(latencies), 1),
        p95_ms=round(p95(latencies), 1),
        failed=sum(status != "done" for _, status in outcomes),
    )


Bind = Callable[[aiohttp.ClientSession], Callable[[], Awaitable[str]]]


def seed_002(image: bytes) -> Bind:
    # Encoded once: the client shares the server's two cores, and re-encoding 400 KB of
    # JSON per request would be measuring the client.
    body = json.dumps(
        {
            "image_data": base64.b64encode(image).decode(),
            "operation": "resize",
            "width": 200,
            "height": 200,
        }
    ).encode()
    headers = {"content-type": "application/json"}

    def bind(client: aiohttp.ClientSession) -> Callable[[], Awaitable[str]]:
        async def submit() -> str:
            async with client.post("/jobs", data=body, headers=headers) as response:
                response.raise_for_status()
                return (await response.json())["job_id"]

        return submit

    return bind


def seed_001(image: bytes) -> Bind:
    def bind(client: aiohttp.ClientSession) -> Callable[[], Awaitable[str]]:
        async def submit() -> str:
            form = aiohttp.FormData()
            form.add_field("file", image, filename="photo.jpg", content_type="image/jpeg")
            async with client.post("/upload", data=form) as response:
                response.raise_for_status()
                return (await response.json())["id"]

        return submit

    return bind


class RssSampler:
    """Peak RSS of a process tree, sampled every 20 ms from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_tree_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _tree(self) -> list[int]:
        pids, frontier = [self.pid], [self.pid]
        while frontier:
            parent = frontier.pop()
            # Each thread lists the children it started; the engine starts them from threads.
            for task in Path(f"/proc/{parent}/task").glob("*/children"):
                try:
                    children = [int(child) for child in task.read_text().split()]
                except OSError:
                    continue
                frontier += children
                pids += children
        return pids

    @staticmethod
    def _status_kib(pid: int, field: str) -> int:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(field):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            total = sum(self._status_kib(pid, "VmRSS:") for pid in self._tree())
            self.peak_tree_kib = max(self.peak_tree_kib, total)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> tuple[float, float]:
        """(API process peak MiB, process tree peak MiB)."""
        self._stop.set()
        self._thread.join()
        return self._status_kib(self.pid, "VmHWM:") / 1024, self.peak_tree_kib / 1024


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(data_dir: Path, workers: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {
        **os.environ,
        "SMARTTHUMB_PORT": str(port),
        "SMARTTHUMB_DATA_DIR": str(data_dir),
        "SMARTTHUMB_WORKERS": str(workers),
    }
    executable = Path(sys.executable).with_name("smartthumb-api")
    process = subprocess.Popen([str(executable)], env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("smartthumb-api did not become ready")


async def run_all(url: str, repeat: int) -> list[Row]:
    scenarios = [
        ("seed 002: 50 x resize 1920x1080 JPEG -> 200x200", 50, seed_002(photo_jpeg((1920, 1080)))),
        ("seed 002: 50 x resize 1x1 PNG -> 200x200", 50, seed_002(one_pixel_png())),
        ("seed 001: 10 x upload -> 300x300 crop", 10, seed_001(photo_jpeg((1920, 1080)))),
    ]
    rows = []
    # aiohttp rather than httpx: the client shares the two cores with the server, and
    # httpx spent more CPU per job than the server did.
    connector = aiohttp.TCPConnector(limit=200)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as client:
        for name, count, bind in scenarios:
            await measure("warm-up", client, 2, bind(client))
            for _ in range(repeat):
                rows.append(await measure(name, client, count, bind(client)))
    return rows


def print_table(rows: list[Row], api_peak: float, tree_peak: float, workers: int) -> None:
    header = f"{'scenario':50} {'jobs':>4} {'wall s':>7} {'jobs/s':>7} {'median ms':>10} {'p95 ms':>8} {'failed':>6}"
    print(f"\nsmartthumb HTTP benchmark - {os.cpu_count()} CPUs, {workers} workers")
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row.scenario:50} {row.jobs:>4} {row.wall_s:>7.2f} {row.jobs_per_s:>7.1f} "
            f"{row.median_ms:>10.1f} {row.p95_ms:>8.1f} {row.failed:>6}"
        )
    print(f"peak RSS: API process {api_peak:.0f} MiB; API + runner processes {tree_peak:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each scenario")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="smartthumb-bench-") as scratch:
        process, url = start_server(Path(scratch), args.workers)
        sampler = RssSampler(process.pid)
        sampler.start()
        try:
            rows = asyncio.run(run_all(url, args.repeat))
        finally:
            api_peak, tree_peak = sampler.stop()
            process.send_signal(signal.SIGINT)
            process.wait(timeout=60)
    print_table(rows, api_peak, tree_peak, args.workers)
    OUT.mkdir(exist_ok=True)
    report = {
        "cpus": os.cpu_count(),
        "workers": args.workers,
        "api_peak_rss_mib": api_peak,
        "tree_peak_rss_mib": tree_peak,
        "rows": [asdict(row) for row in rows],
    }
    (OUT / "bench_http.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
