"""HTTP benchmarks of the seeds' workloads against a real `smartthumb-api` process tree.

- seed 002: clients each POST /jobs resizing a 1920x1080 JPEG to 200x200 (and the same with
  a 1x1 PNG: job overhead, not image work), then follow the job either by long-poll
  (`GET /job/{id}?wait=30`) or by polling `GET /jobs/{id}` every 20 ms, sending the last
  ETag back (If-None-Match), as a browser or a caching client does;
- seed 001: 10 concurrent POST /upload (multipart) -> 300x300, all done.

Each client runs `--rounds` jobs one after the other. Clock: from the first submit to the last
job seen done. Latency of a job: its submit to its done. CPU per job: user + system time, read
from /proc/<pid>/stat before and after, of the API side (every process of the tree but the
runner's fork server and its workers) and of the runners; the client's own CPU is shown too
(it shares the machine). RSS: peak of the API side and of the whole tree (sampled).

    .venv/bin/python bench/bench_http.py [--repeat 3] [--rounds 2]
    .venv/bin/python bench/bench_http.py --sweep   # cores x SMARTTHUMB_API_PROCESSES
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import resource
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
TICKS = os.sysconf("SC_CLK_TCK")
POLL_S = 0.02
RUNNER_MARK = b"smartthumb.operator.local.zygote"
"""In the command line of the runners' fork server: its process tree is the runners' CPU."""


@dataclass
class Row:
    scenario: str
    clients: int
    jobs: int
    wall_s: float
    jobs_per_s: float
    median_ms: float
    p95_ms: float
    failed: int
    requests_per_job: float
    api_cpu_ms_per_job: float
    runner_cpu_ms_per_job: float
    client_cpu_ms_per_job: float


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


# --- the process tree's CPU --------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    # Each thread lists the children it started; the engine starts them from threads.
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(child) for child in task.read_text().split()]
        except OSError:
            continue
    return found


def _cpu_ticks(pid: int) -> int:
    """utime + stime + cutime + cstime: the process and its children it has reaped."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
    except OSError:
        return 0
    return sum(int(value) for value in fields[11:15])


def _is_runner(pid: int) -> bool:
    try:
        return RUNNER_MARK in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def tree_cpu_s(root: int) -> tuple[float, float]:
    """(API side, runners) CPU seconds of the tree under `root` so far."""
    api = runners = 0
    frontier = [(root, False)]
    while frontier:
        pid, in_runner = frontier.pop()
        in_runner = in_runner or _is_runner(pid)
        ticks = _cpu_ticks(pid)
        if in_runner:
            runners += ticks
        else:
            api += ticks
        frontier += [(child, in_runner) for child in _children(pid)]
    return api / TICKS, runners / TICKS


def client_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- workloads ---------------------------------------------------------------------------------

Submit = Callable[[aiohttp.ClientSession], Awaitable[str]]
Follow = Callable[[aiohttp.ClientSession, str, list[int]], Awaitable[str]]


async def long_poll(client: aiohttp.ClientSession, job_id: str, requests: list[int]) -> str:
    while True:
        requests[0] += 1
        async with client.get(f"/job/{job_id}", params={"wait": 30}) as response:
            response.raise_for_status()
            status = (await response.json())["status"]
        if status in ("done", "failed"):
            return status


async def poll_20ms(client: aiohttp.ClientSession, job_id: str, requests: list[int]) -> str:
    etag: str | None = None
    status = "pending"
    while True:
        requests[0] += 1
        headers = {"If-None-Match": etag} if etag else {}
        async with client.get(f"/jobs/{job_id}", headers=headers) as response:
            if response.status != 304:
                response.raise_for_status()
                status = (await response.json())["status"]
                etag = response.headers.get("ETag")
        if status in ("completed", "failed"):
            return "done" if status == "completed" else status
        await asyncio.sleep(POLL_S)


def seed_002_body(image: bytes) -> bytes:
    """Seed 002's POST /jobs body: resize `image` to 200x200."""
    return json.dumps(
        {
            "image_data": base64.b64encode(image).decode(),
            "operation": "resize",
            "width": 200,
            "height": 200,
        }
    ).encode()


def seed_002(image: bytes) -> Submit:
    # Encoded once: the client shares the server's cores, and re-encoding 400 KB of JSON per
    # request would be measuring the client.
    body = seed_002_body(image)
    headers = {"content-type": "application/json"}

    async def submit(client: aiohttp.ClientSession) -> str:
        async with client.post("/jobs", data=body, headers=headers) as response:
            response.raise_for_status()
            return str((await response.json())["job_id"])

    return submit


def seed_001(image: bytes) -> Submit:
    async def submit(client: aiohttp.ClientSession) -> str:
        form = aiohttp.FormData()
        form.add_field("file", image, filename="photo.jpg", content_type="image/jpeg")
        async with client.post("/upload", data=form) as response:
            response.raise_for_status()
            return str((await response.json())["id"])

    return submit


@dataclass
class Scenario:
    name: str
    clients: int
    submit: Submit
    follow: Follow


async def measure(
    scenario: Scenario, client: aiohttp.ClientSession, rounds: int, server_pid: int
) -> Row:
    requests = [0]

    async def one_client() -> list[tuple[float, str]]:
        outcomes = []
        for _ in range(rounds):
            started = time.perf_counter()
            requests[0] += 1
            job_id = await scenario.submit(client)
            status = await scenario.follow(client, job_id, requests)
            outcomes.append((time.perf_counter() - started, status))
        return outcomes

    api_before, runners_before = tree_cpu_s(server_pid)
    client_before = client_cpu_s()
    began = time.perf_counter()
    results = await asyncio.gather(*(one_client() for _ in range(scenario.clients)))
    wall = time.perf_counter() - began
    api_after, runners_after = tree_cpu_s(server_pid)
    client_spent = client_cpu_s() - client_before
    outcomes = [outcome for result in results for outcome in result]
    latencies = [seconds * 1000 for seconds, _ in outcomes]
    count = len(outcomes)
    return Row(
        scenario=scenario.name,
        clients=scenario.clients,
        jobs=count,
        wall_s=round(wall, 3),
        jobs_per_s=round(count / wall, 1),
        median_ms=round(statistics.median(latencies), 1),
        p95_ms=round(p95(latencies), 1),
        failed=sum(status != "done" for _, status in outcomes),
        requests_per_job=round(requests[0] / count, 1),
        api_cpu_ms_per_job=round((api_after - api_before) * 1000 / count, 2),
        runner_cpu_ms_per_job=round((runners_after - runners_before) * 1000 / count, 2),
        client_cpu_ms_per_job=round(client_spent * 1000 / count, 2),
    )


def scenarios(full: bool) -> list[Scenario]:
    jpeg, png = seed_002(photo_jpeg((1920, 1080))), seed_002(one_pixel_png())
    jpeg_name = "seed 002: JPEG 1920x1080 -> 200x200"
    chosen = [
        Scenario(f"{jpeg_name}, long-poll", 50, jpeg, long_poll),
        Scenario(f"{jpeg_name}, poll 20 ms", 50, jpeg, poll_20ms),
        Scenario(f"{jpeg_name}, poll 20 ms", 200, jpeg, poll_20ms),
    ]
    if full:
        chosen += [
            Scenario("seed 002: 1x1 PNG -> 200x200, long-poll", 50, png, long_poll),
            Scenario(
                "seed 001: upload -> 300x300 crop, long-poll",
                10,
                seed_001(photo_jpeg((1920, 1080))),
                long_poll,
            ),
        ]
    return chosen


# --- the server --------------------------------------------------------------------------------


class RssSampler:
    """Peak RSS of the API side and of the whole process tree, sampled every 20 ms."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_api_kib = 0
        self.peak_tree_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _rss_kib(pid: int) -> int:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            api = tree = 0
            frontier = [(self.pid, False)]
            while frontier:
                pid, in_runner = frontier.pop()
                in_runner = in_runner or _is_runner(pid)
                rss = self._rss_kib(pid)
                tree += rss
                api += 0 if in_runner else rss
                frontier += [(child, in_runner) for child in _children(pid)]
            self.peak_api_kib = max(self.peak_api_kib, api)
            self.peak_tree_kib = max(self.peak_tree_kib, tree)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> tuple[float, float]:
        """(API side peak MiB, process tree peak MiB)."""
        self._stop.set()
        self._thread.join()
        return self.peak_api_kib / 1024, self.peak_tree_kib / 1024


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(
    data_dir: Path, workers: int, processes: int | None, cpus: str | None
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "SMARTTHUMB_PORT": str(port),
        "SMARTTHUMB_DATA_DIR": str(data_dir),
        "SMARTTHUMB_WORKERS": str(workers),
    }
    if processes is not None:
        env["SMARTTHUMB_API_PROCESSES"] = str(processes)
    argv = [str(Path(sys.executable).with_name("smartthumb-api"))]
    if cpus is not None:
        argv = ["taskset", "-c", cpus, *argv]
    process = subprocess.Popen(argv, env=env)
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


async def run_all(
    url: str, chosen: list[Scenario], repeat: int, rounds: int, server_pid: int
) -> list[Row]:
    rows = []
    # aiohttp rather than httpx: the client shares the cores with the server, and httpx spent
    # more CPU per job than the server did.
    connector = aiohttp.TCPConnector(limit=400)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as client:
        for scenario in chosen:
            warm_up = Scenario("warm-up", 2, scenario.submit, scenario.follow)
            await measure(warm_up, client, 1, server_pid)
            for _ in range(repeat):
                rows.append(await measure(scenario, client, rounds, server_pid))
    return rows


def serve_and_measure(
    chosen: list[Scenario],
    args: argparse.Namespace,
    processes: int | None = None,
    cpus: str | None = None,
) -> tuple[list[Row], float, float]:
    with tempfile.TemporaryDirectory(prefix="smartthumb-bench-") as scratch:
        process, url = start_server(Path(scratch), args.workers, processes, cpus)
        sampler = RssSampler(process.pid)
        sampler.start()
        try:
            rows = asyncio.run(run_all(url, chosen, args.repeat, args.rounds, process.pid))
        finally:
            api_peak, tree_peak = sampler.stop()
            process.send_signal(signal.SIGINT)
            process.wait(timeout=60)
    return rows, api_peak, tree_peak


COLUMNS = [
    ("scenario", "scenario", 46, ""),
    ("clients", "clients", 7, "d"),
    ("jobs", "jobs", 5, "d"),
    ("jobs/s", "jobs_per_s", 7, ".1f"),
    ("median ms", "median_ms", 9, ".1f"),
    ("p95 ms", "p95_ms", 8, ".1f"),
    ("failed", "failed", 6, "d"),
    ("req/job", "requests_per_job", 7, ".1f"),
    ("API ms/job", "api_cpu_ms_per_job", 10, ".2f"),
    ("runner ms/job", "runner_cpu_ms_per_job", 13, ".2f"),
    ("client ms/job", "client_cpu_ms_per_job", 13, ".2f"),
]


def print_table(title: str, rows: list[Row], labels: list[str] | None = None) -> None:
    """`labels`: a first column (cores and processes in the sweep)."""
    label_width = max((len(label) for label in labels), default=0) if labels else 0
    head = " ".join(
        f"{name:<{width}}" if not fmt else f"{name:>{width}}" for name, _, width, fmt in COLUMNS
    )
    head = f"{'':<{label_width}} {head}" if labels else head
    print(f"\n{title}")
    print(head)
    print("-" * len(head))
    for index, row in enumerate(rows):
        values = asdict(row)
        cells = [f"{labels[index]:<{label_width}}"] if labels else []
        for _, key, width, fmt in COLUMNS:
            value = values[key]
            cells.append(f"{value:<{width}}" if not fmt else f"{value:>{width}{fmt}}")
        print(" ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each scenario")
    parser.add_argument("--rounds", type=int, default=2, help="jobs each client runs in turn")
    parser.add_argument("--only", help="the scenarios whose name contains this")
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="the JPEG scenarios for each number of cores and of SMARTTHUMB_API_PROCESSES",
    )
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    cpus = os.cpu_count() or 1
    if not args.sweep:
        chosen = [
            one for one in scenarios(full=True) if args.only in (None, "") or args.only in one.name
        ]
        rows, api_peak, tree_peak = serve_and_measure(chosen, args)
        print_table(f"smartthumb HTTP benchmark - {cpus} CPUs, {args.workers} workers", rows)
        print(f"peak RSS: API side {api_peak:.0f} MiB; API + runner processes {tree_peak:.0f} MiB")
        report = {
            "cpus": cpus,
            "workers": args.workers,
            "api_peak_rss_mib": api_peak,
            "tree_peak_rss_mib": tree_peak,
            "rows": [asdict(row) for row in rows],
        }
        (OUT / "bench_http.json").write_text(json.dumps(report, indent=2))
        return
    sweep = []
    for cores in range(1, cpus + 1):
        for processes in range(1, cpus + 1):
            rows, _, _ = serve_and_measure(scenarios(full=False), args, processes, f"0-{cores - 1}")
            sweep += [(cores, processes, row) for row in rows]
    print_table(
        f"smartthumb HTTP sweep - server on N of {cpus} CPUs, {args.workers} workers",
        [row for _, _, row in sweep],
        [f"{cores} cores, {processes} API proc" for cores, processes, _ in sweep],
    )
    (OUT / "bench_http_sweep.json").write_text(
        json.dumps([{"cores": c, "processes": p, **asdict(r)} for c, p, r in sweep], indent=2)
    )


if __name__ == "__main__":
    main()
