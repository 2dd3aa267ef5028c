"""Seed 002's workload through the HTTP API in both modes, in one run: 50 concurrent clients
each `POST /jobs` resizing a 1920x1080 JPEG to 200x200 and polling `GET /jobs/{id}` until
`status` is `completed`, against `smartthumb-api` on the local engine and then on the
Kubernetes backend (ThumbnailJobs run by `smartthumb-operator` as real runner pods on the
real node), with the same concurrency in both (local SMARTTHUMB_WORKERS = the operator's
SMARTTHUMB_MAX_RUNNING = --workers).

    .venv/bin/python bench/bench_cluster.py [--jobs 50] [--workers 2] [--poll 0.05] [--runs 1]

Local mode runs first, before the control plane exists, so that it has the machine to itself;
then the control plane, the real node, the operator and the API start, as `make cluster`
starts them (hack/cluster.py). Each mode gets two warm-up jobs first (the local engine's warm
workers, the node's first pod). Wall time: the first submit to the last job seen
`completed`; latency: each job's submit to its `completed` (within one poll interval). Peak
RSS: VmHWM of the API process and, in cluster mode, of the operator process (each its own
process; runner processes and pods are not counted); also the CPU seconds those processes
used during the measured runs and the number of `GET /jobs/{id}` polls (the polling is load
on the same two cores). With --runs N the figures are the medians of N runs per mode.

Needs what the real-node tests need (root, make testbin, hack/ensure-node.sh); runs
hack/images.sh (`make images`: instant when the current tree's images are built) and uses the
images it names. Everything it starts (processes, control plane, node, containers, temporary
folders) is stopped and removed at the end, also on Ctrl-C, SIGTERM or failure.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "hack")]

from cluster import api_env, install, operator_env  # hack/cluster.py
from images import photo
from kubecluster import (
    KubeCluster,
    free_port,
    missing_binaries,
    start_kube_cluster,
    testbin_dir,
)
from realnode import (
    RealNode,
    missing_prerequisites,
    start_real_node,
)

BIN = Path(sys.executable).parent
WARM_UP = 2


@dataclass
class Run:
    wall_s: float
    latencies_s: list[float]
    failed: int
    polls: int
    """GET /jobs/{id} requests made."""
    cpu_s: dict[str, float] = field(default_factory=dict)
    """CPU seconds (user + system) each process used during the run, by name."""

    @property
    def jobs(self) -> int:
        return len(self.latencies_s)


@dataclass
class Mode:
    name: str
    runs: list[Run]
    api_rss_mib: float
    operator_rss_mib: float | None = None

    def median(self, figure: str) -> float:
        values = {
            "wall": [run.wall_s for run in self.runs],
            "rate": [run.jobs / run.wall_s for run in self.runs],
            "p50": [statistics.median(run.latencies_s) for run in self.runs],
            "p95": [p95(run.latencies_s) for run in self.runs],
            "polls": [run.polls for run in self.runs],
            "api_cpu": [run.cpu_s["api"] for run in self.runs],
            "operator_cpu": [run.cpu_s.get("operator", 0.0) for run in self.runs],
        }[figure]
        return statistics.median(values)


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def jpeg_1920x1080() -> bytes:
    buffer = io.BytesIO()
    photo("astronaut").resize((1920, 1080), Image.Resampling.BICUBIC).save(
        buffer, "JPEG", quality=90
    )
    return buffer.getvalue()


def request_body() -> bytes:
    # Encoded once: the clients share the two cores with the server.
    return json.dumps(
        {
            "image_data": base64.b64encode(jpeg_1920x1080()).decode(),
            "operation": "resize",
            "width": 200,
            "height": 200,
        }
    ).encode()


# --- the load -------------------------------------------------------------------------------


async def one_job(
    client: aiohttp.ClientSession, body: bytes, poll_s: float, timeout_s: float
) -> tuple[float, str, int]:
    """One seed 002 client: submit, then GET /jobs/{id} every poll_s until it is finished;
    (seconds, last status, GETs made)."""
    started = time.perf_counter()
    polls = 0
    async with client.post(
        "/jobs", data=body, headers={"content-type": "application/json"}
    ) as response:
        if response.status != 202:
            raise RuntimeError(f"POST /jobs: {response.status} {await response.text()}")
        job_id = (await response.json())["job_id"]
    while True:
        async with client.get(f"/jobs/{job_id}") as response:
            response.raise_for_status()
            status = (await response.json())["status"]
        polls += 1
        if status in ("completed", "failed"):
            return time.perf_counter() - started, status, polls
        if time.perf_counter() - started > timeout_s:
            return time.perf_counter() - started, f"timed out ({status})", polls
        await asyncio.sleep(poll_s)


async def load(url: str, body: bytes, count: int, poll_s: float, timeout_s: float) -> Run:
    # aiohttp rather than httpx, as in bench_http.py: the clients share the two cores with
    # the server (and in cluster mode with the control plane), and httpx costs more CPU.
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as client:
        began = time.perf_counter()
        outcomes = await asyncio.gather(
            *(one_job(client, body, poll_s, timeout_s) for _ in range(count))
        )
        wall = time.perf_counter() - began
    failed = [status for _, status, _ in outcomes if status != "completed"]
    if failed:
        print(
            f"  {len(failed)} of {count} jobs did not complete: {sorted(set(failed))}",
            file=sys.stderr,
        )
    return Run(
        wall,
        [seconds for seconds, _, _ in outcomes],
        len(failed),
        sum(polls for _, _, polls in outcomes),
    )


def measure(
    name: str, url: str, body: bytes, args: argparse.Namespace, pids: dict[str, int]
) -> list[Run]:
    asyncio.run(load(url, body, WARM_UP, args.poll, args.timeout))
    runs = []
    for index in range(args.runs):
        before = {process: cpu_seconds(pid) for process, pid in pids.items()}
        run = asyncio.run(load(url, body, args.jobs, args.poll, args.timeout))
        run.cpu_s = {process: cpu_seconds(pid) - before[process] for process, pid in pids.items()}
        print(
            f"{name} run {index + 1}/{args.runs}: {run.jobs} jobs in {run.wall_s:.2f} s "
            f"({run.failed} failed)",
            flush=True,
        )
        runs.append(run)
    return runs


# --- the processes --------------------------------------------------------------------------


class Processes:
    """The API and operator subprocesses, each logging to its own file; stopped at the end."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.running: list[subprocess.Popen] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        # Only the variables given here: none of the caller's SMARTTHUMB_* leak in.
        base = {
            key: value for key, value in os.environ.items() if not key.startswith("SMARTTHUMB_")
        }
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
        process = subprocess.Popen(argv, env={**base, **env}, stdout=log, stderr=log)
        log.close()
        process.name = name  # type: ignore[attr-defined]
        self.running.append(process)
        return process

    def stop(self, process: subprocess.Popen) -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.running.remove(process)

    def stop_all(self) -> None:
        for process in list(self.running):
            self.stop(process)

    def tail(self, name: str, lines: int = 20) -> str:
        path = self.logs / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def peak_rss_mib(pid: int) -> float:
    """VmHWM (the kernel's peak resident set) of a live process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (its own threads, not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_ready(
    what: str, url: str, process: subprocess.Popen, procs: Processes, timeout_s: float = 120
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited ({process.returncode}):\n{procs.tail(process.name)}")  # type: ignore[attr-defined]
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(
        f"{what} not ready at {url} after {timeout_s:.0f} s:\n{procs.tail(process.name)}"
    )  # type: ignore[attr-defined]


def local_mode(work: Path, procs: Processes, body: bytes, args: argparse.Namespace) -> Mode:
    data = work / "local-data"
    data.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    api = procs.start(
        "api-local",
        [str(BIN / "smartthumb-api")],
        {
            "SMARTTHUMB_BACKEND": "local",
            "SMARTTHUMB_DATA_DIR": str(data),
            "SMARTTHUMB_WORKERS": str(args.workers),
            "SMARTTHUMB_PORT": str(port),
        },
    )
    wait_ready("smartthumb-api (local)", f"{url}/readyz", api, procs)
    runs = measure("local", url, body, args, {"api": api.pid})
    api_rss = peak_rss_mib(api.pid)
    procs.stop(api)
    return Mode("local", runs, api_rss)


def cluster_mode(
    work: Path,
    procs: Processes,
    body: bytes,
    args: argparse.Namespace,
    tars: dict[str, tuple[str, Path]],
) -> Mode:
    volume = work / "volume"
    volume.mkdir()
    started = time.perf_counter()
    with (
        start_kube_cluster(testbin_dir(), work / "kube") as cluster,
        start_real_node(cluster, tars) as node,
    ):
        install(cluster, volume)
        try:
            return cluster_run(cluster, node, volume, procs, body, args, started)
        except Exception:
            for name in ("operator", "api-cluster"):
                print(f"--- {name} log (last lines)\n{procs.tail(name)}", file=sys.stderr)
            raise
        finally:
            # Before the node and the control plane go, also on failure.
            procs.stop_all()


def cluster_run(
    cluster: KubeCluster,
    node: RealNode,
    volume: Path,
    procs: Processes,
    body: bytes,
    args: argparse.Namespace,
    started: float,
) -> Mode:
    """The operator and the API as `make cluster` starts them (hack/cluster.py), then the
    load."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    workers = str(args.workers)
    env = operator_env(cluster, node, volume, url, max_running=workers)
    operator = procs.start("operator", [str(BIN / "smartthumb-operator")], env)
    liveness = env["SMARTTHUMB_LIVENESS_PORT"]
    api = procs.start(
        "api-cluster",
        [str(BIN / "smartthumb-api")],
        api_env(cluster, volume, port, max_running=workers),
    )
    wait_ready("smartthumb-operator", f"http://127.0.0.1:{liveness}/healthz", operator, procs)
    wait_ready("smartthumb-api (kubernetes)", f"{url}/readyz", api, procs)
    print(
        f"cluster mode: control plane, real node, operator and API up in "
        f"{time.perf_counter() - started:.0f} s",
        flush=True,
    )
    runs = measure("cluster", url, body, args, {"api": api.pid, "operator": operator.pid})
    return Mode("cluster", runs, peak_rss_mib(api.pid), peak_rss_mib(operator.pid))


# --- set-up and report ----------------------------------------------------------------------


def fail(message: str) -> None:
    print(f"bench_cluster: {message}", file=sys.stderr)
    sys.exit(2)


def run_images_sh() -> str:
    """hack/images.sh's standard output (the tars); its log goes to our stderr. On Ctrl-C or
    SIGTERM it gets SIGTERM and time to stop the dockerd it started (its own trap)."""
    script = subprocess.Popen(
        ["bash", str(ROOT / "hack" / "images.sh")], stdout=subprocess.PIPE, text=True
    )
    try:
        out, _ = script.communicate()
    except BaseException:
        script.terminate()
        try:
            script.wait(timeout=60)
        except subprocess.TimeoutExpired:
            script.kill()
        raise
    if script.returncode != 0:
        raise RuntimeError(f"hack/images.sh failed ({script.returncode})")
    return out


def images(into: Path) -> dict[str, tuple[str, Path]]:
    """role -> (image, tar) of the current tree, as the real node imports them: what
    hack/images.sh (`make images`) prints, built by it if need be (it is instant when they
    are), hard-linked into `into` so that another checkout's images.sh pruning older tars
    cannot take them away before the node has imported them."""
    into.mkdir()
    for _ in range(3):
        out = run_images_sh()
        found: dict[str, tuple[str, Path]] = {}
        try:
            for line in out.split():
                tar = Path(line)
                if tar.suffix != ".tar":
                    continue
                role, _, digest = tar.stem.rpartition("-")
                link = into / tar.name
                link.unlink(missing_ok=True)
                link.hardlink_to(tar)
                found[role] = (f"smartthumb-{role}:{digest}", link)
        except FileNotFoundError:  # pruned in between: ask again
            continue
        if {"runner", "operator"} <= found.keys():
            return found
    raise RuntimeError(f"hack/images.sh did not leave both images' tars:\n{out}")


def print_table(modes: list[Mode], args: argparse.Namespace) -> None:
    local, cluster = modes
    runs = f"median of {args.runs} runs" if args.runs > 1 else "1 run"
    print()
    print(
        f"seed 002 over HTTP: {args.jobs} concurrent clients, resize 1920x1080 JPEG -> "
        f"200x200, poll every {args.poll * 1000:.0f} ms; {args.workers} local workers = "
        f"operator max running; {os.cpu_count()} CPUs; {runs}"
    )
    print()
    print(
        "| mode | jobs | wall s | jobs/s | p50 latency s | p95 latency s | failed "
        "| GET polls | API CPU s | API peak RSS MiB | operator CPU s | operator peak RSS MiB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for mode in modes:
        if mode.operator_rss_mib is None:
            operator = "- | -"
        else:
            operator = f"{mode.median('operator_cpu'):.1f} | {mode.operator_rss_mib:.0f}"
        print(
            f"| {mode.name} | {mode.runs[0].jobs} | {mode.median('wall'):.2f} "
            f"| {mode.median('rate'):.2f} | {mode.median('p50'):.2f} "
            f"| {mode.median('p95'):.2f} | {sum(run.failed for run in mode.runs)} "
            f"| {mode.median('polls'):.0f} | {mode.median('api_cpu'):.1f} "
            f"| {mode.api_rss_mib:.0f} | {operator} |"
        )

    def ratio(figure: str) -> str:
        value = cluster.median(figure) / local.median(figure)
        return f"{value:.3f}x" if value < 1 else f"{value:.1f}x"

    print(
        f"| cluster/local | | {ratio('wall')} | {ratio('rate')} | {ratio('p50')} "
        f"| {ratio('p95')} | | {ratio('polls')} | {ratio('api_cpu')} "
        f"| {cluster.api_rss_mib / local.api_rss_mib:.2f}x | | |"
    )
    print(
        "\nwall: first submit to last job seen completed; latency: submit to completed, per "
        "job; CPU s: of that process during the measured run(s), median; peak RSS: VmHWM "
        "over the process's life (warm-up included); runner processes and pods not counted."
    )
    print(f"\n(command: {' '.join(['.venv/bin/python', 'bench/bench_cluster.py', *sys.argv[1:]])})")


def _interrupted(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50, help="concurrent clients, one job each")
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 2,
        help="local SMARTTHUMB_WORKERS and the operator's SMARTTHUMB_MAX_RUNNING",
    )
    parser.add_argument(
        "--poll",
        type=float,
        default=0.05,
        help="seconds between a client's GET /jobs/{id} (both modes)",
    )
    parser.add_argument("--runs", type=int, default=1, help="runs per mode; medians reported")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per job at most")
    args = parser.parse_args()
    if os.geteuid() != 0:
        fail("the real node needs root (kubelet, containerd, network namespaces)")
    bin_dir = testbin_dir()
    # The images are seen to below (built when missing).
    missing = missing_binaries(bin_dir) + [
        problem for problem in missing_prerequisites(bin_dir) if "(make images)" not in problem
    ]
    if missing:
        fail(f"missing {', '.join(missing)}: run `make testbin node` first")
    # Ctrl-C also when started where SIGINT is ignored (a background job of a script).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupted)
    body = request_body()
    work = Path(tempfile.mkdtemp(prefix="st-bench-cluster-", dir="/tmp"))
    work.chmod(0o755)
    logs = work / "logs"
    logs.mkdir()
    procs = Processes(logs)
    try:
        tars = images(work / "images")
        modes = [local_mode(work, procs, body, args), cluster_mode(work, procs, body, args, tars)]
    except KeyboardInterrupt:
        modes = []
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    if not modes:
        print(
            "bench_cluster: interrupted; everything it started is stopped and removed",
            file=sys.stderr,
        )
        sys.exit(130)
    print_table(modes, args)


if __name__ == "__main__":
    main()
