"""The Kubernetes operator under load: N ThumbnailJobs at once on the kwok control plane.

    .venv/bin/python bench/bench_operator.py [--jobs 300 3000] [--max-running 50]

Starts its own control plane (tests/kubecluster.py: etcd, kube-apiserver, controller-manager,
scheduler, kwok), installs the CRD and, for each N, runs `smartthumb-operator` as a process of
its own (a fresh one per N, so its peak RSS is that run's), creates N ThumbnailJobs in a fresh
namespace as fast as it can (kwok ends every pod at once with a success result) and waits,
on a watch, until all are Succeeded. Prints a markdown table: seconds from the first create to
the last Succeeded, jobs/s, reconciliations/s and their median (the operator's /metrics),
the operator's peak RSS (VmHWM) and the CPU seconds of the operator and the control plane.
Needs the binaries of `make testbin`. Everything it starts is stopped, also on Ctrl-C.

kube-controller-manager's client is limited to 20 requests/s by default and its Job controller
makes about six per Job (pod, finalizer, status updates): that alone caps any operator at about
3 Jobs/s. The benchmark starts it with --controller-qps (default 200, burst twice that;
0: the test cluster's defaults) so that the operator, not that limit, is measured.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
sys.path.insert(0, str(TESTS))

from kubecluster import (
    SETPRIV,
    KubeCluster,
    free_port,
    missing_binaries,
    start_kube_cluster,
    testbin_dir,
)
from kubernetes import client, watch
from kubernetes.client.rest import ApiException
from operatorharness import result_json, simulated, thumbnail_job
from smartthumb.operator.kube import crd as crd_module
from smartthumb.operator.kube.resource import GROUP, PLURAL, VERSION

OPERATOR = REPO / ".venv" / "bin" / "smartthumb-operator"
CREATORS = 8
"""Threads creating the ThumbnailJobs (each with its own connection)."""
TARGETS = {300: "<= 60 s, <= 150 MB"}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


def wait_until(what: str, probe: Any, timeout: float, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if probe():
                return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def controller_qps_bin(bin_dir: Path, workdir: Path, qps: int) -> Path:
    """A bin folder like `bin_dir`, whose kube-controller-manager gets a higher client QPS."""
    wrapped = workdir / "bin"
    wrapped.mkdir()
    for binary in bin_dir.iterdir():
        if binary.name != "kube-controller-manager":
            (wrapped / binary.name).symlink_to(binary.resolve())
    script = wrapped / "kube-controller-manager"
    script.write_text(
        f'#!/bin/sh\nexec "{(bin_dir / script.name).resolve()}" "$@" '
        f"--kube-api-qps={qps} --kube-api-burst={2 * qps}\n"
    )
    script.chmod(0o755)
    return wrapped


def install_crd(cluster: KubeCluster) -> None:
    cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", str(REPO / crd_module.OUTPUT)
    )
    cluster.kubectl(
        "wait", "--for=condition=Established", f"crd/{crd_module.NAME}", "--timeout=30s"
    )
    wait_until(
        "the ThumbnailJob resource to be served",
        lambda: cluster.kubectl("get", "tj", "-A", check=False).returncode == 0,
        30,
    )


@contextlib.contextmanager
def fresh_namespace(core: client.CoreV1Api, wait_gone: bool) -> Iterator[str]:
    """A new namespace with its default ServiceAccount; deleted afterwards and, if `wait_gone`,
    waited for (at most a minute) so that the next run's operator does not see its leftovers."""
    name = f"bench-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": name}})
    try:
        wait_until(
            f"the default ServiceAccount in {name}",
            lambda: core.read_namespaced_service_account("default", name),
            30,
        )
        yield name
    finally:
        with contextlib.suppress(ApiException):
            core.delete_namespace(name)
        if wait_gone:

            def gone() -> bool:
                try:
                    core.read_namespace(name)
                except ApiException as error:
                    return error.status == 404
                return False

            with contextlib.suppress(TimeoutError):
                wait_until(f"namespace {name} to go", gone, 60, interval=0.5)


@dataclass
class OperatorProcess:
    proc: subprocess.Popen[bytes]
    metrics_port: int
    liveness_port: int
    log: Path

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.read().decode()

    def health(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.liveness_port}/healthz"
        with urllib.request.urlopen(url, timeout=5) as answer:
            return json.loads(answer.read())

    def check(self) -> None:
        if self.proc.poll() is not None:
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])
            raise RuntimeError(f"the operator exited with {self.proc.returncode}:\n{tail}")


@contextlib.contextmanager
def run_operator(
    cluster: KubeCluster, volume: Path, workdir: Path, max_running: int
) -> Iterator[OperatorProcess]:
    """`smartthumb-operator` in a process (group) of its own, killed when the block ends."""
    metrics_port, liveness_port = free_port(), free_port()
    tag = uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig),
        "SMARTTHUMB_VOLUME_PATH": str(volume),
        "SMARTTHUMB_VOLUME_HOST_PATH": str(volume),
        "SMARTTHUMB_MAX_RUNNING": str(max_running),
        "SMARTTHUMB_METRICS_PORT": str(metrics_port),
        "SMARTTHUMB_LIVENESS_PORT": str(liveness_port),
        "SMARTTHUMB_LEASE_NAME": f"bench-{tag}",
        "SMARTTHUMB_LEASE_NAMESPACE": "default",
        "SMARTTHUMB_IDENTITY": f"bench-{tag}",
    }
    log = workdir / f"operator-{tag}.log"
    prefix = [SETPRIV, "--pdeathsig", "KILL", "--"] if SETPRIV else []
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [*prefix, str(OPERATOR)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    handle = OperatorProcess(proc, metrics_port, liveness_port, log)
    try:

        def alive() -> bool:
            handle.check()
            return handle.health() is not None

        wait_until("the operator's liveness endpoint", alive, 60)
        yield handle
    finally:
        stop_group(proc)


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


class Finished:
    """Watches the namespace's ThumbnailJobs and notes when each first shows Succeeded (or
    Failed, which the benchmark counts as a fault)."""

    def __init__(self, api: client.ApiClient, namespace: str, expected: int) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace
        self.expected = expected
        self.succeeded: dict[str, float] = {}
        self.failed: dict[str, str] = {}
        self.done = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        version = ""
        while not self._stop.is_set() and not self.done.is_set():
            stream = watch.Watch()
            try:
                for event in stream.stream(
                    self.custom.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    self.namespace,
                    PLURAL,
                    resource_version=version or None,
                    timeout_seconds=30,
                ):
                    obj = event["object"]
                    version = obj["metadata"].get("resourceVersion", version)
                    self._note(obj)
                    if self.done.is_set() or self._stop.is_set():
                        break
            except ApiException as error:
                if error.status == 410:  # too old: list again
                    version = ""
                else:
                    time.sleep(0.2)
            finally:
                stream.stop()

    def _note(self, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        phase = (obj.get("status") or {}).get("phase")
        if phase == "Succeeded" and name not in self.succeeded:
            self.succeeded[name] = time.perf_counter()
        elif phase == "Failed":
            self.failed[name] = str((obj.get("status") or {}).get("conditions"))
        if len(self.succeeded) + len(self.failed) >= self.expected:
            self.done.set()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(1)  # a daemon: a watch with no events left may not notice at once


def create_all(cluster: KubeCluster, namespace: str, count: int) -> float:
    """Create `count` ThumbnailJobs from CREATORS threads; returns when the first was sent."""
    body = thumbnail_job("x", runnerPod=simulated(result_json()))
    apis = [cluster.api_client() for _ in range(CREATORS)]
    customs = [client.CustomObjectsApi(api) for api in apis]

    def create(index: int) -> None:
        obj = {**body, "metadata": {"name": f"job-{index:05d}"}}
        customs[index % CREATORS].create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, obj, _preload_content=False
        )

    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(CREATORS) as pool:
            list(pool.map(create, range(count)))
    finally:
        for api in apis:
            api.close()
    return started


def histogram(text: str, name: str) -> tuple[float, float, list[tuple[float, float]]]:
    """count, sum and the cumulative (le, count) buckets of a Prometheus histogram."""
    count = total = 0.0
    buckets: list[tuple[float, float]] = []
    for line in text.splitlines():
        if line.startswith(f"{name}_count "):
            count = float(line.split()[-1])
        elif line.startswith(f"{name}_sum "):
            total = float(line.split()[-1])
        elif match := re.match(rf'{name}_bucket{{le="([^"]+)"}} (\S+)', line):
            buckets.append((float(match[1]), float(match[2])))
    return count, total, buckets


def quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Prometheus' histogram_quantile: linear within the bucket that holds the quantile."""
    if not buckets or buckets[-1][1] == 0:
        return float("nan")
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for le, cumulative in buckets:
        if cumulative >= rank:
            if le == float("inf"):
                return lower
            return lower + (le - lower) * (rank - below) / max(cumulative - below, 1e-9)
        lower, below = le, cumulative
    return lower


def api_requests(cluster: KubeCluster) -> dict[tuple[str, str], float]:
    """The API server's request counts so far, by verb and resource."""
    request = urllib.request.Request(f"{cluster.server}/metrics")
    request.add_header("Authorization", f"Bearer {cluster.token}")
    context = ssl.create_default_context(cafile=str(cluster.ca_file))
    with urllib.request.urlopen(request, context=context, timeout=10) as answer:
        text = answer.read().decode()
    counts: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if line.startswith("apiserver_request_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            key = (labels.get("verb", ""), labels.get("resource", ""))
            counts[key] = counts.get(key, 0.0) + float(line.split()[-1])
    return counts


def run_one(
    cluster: KubeCluster,
    api: client.ApiClient,
    volume: Path,
    workdir: Path,
    count: int,
    max_running: int,
    timeout: float,
    last: bool,
) -> dict[str, Any]:
    core = client.CoreV1Api(api)
    pids = {c.name: c.proc.pid for c in cluster.components}
    with (
        fresh_namespace(core, wait_gone=not last) as namespace,
        run_operator(cluster, volume, workdir, max_running) as operator,
    ):
        finished = Finished(api, namespace, count)
        try:
            cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            operator_cpu = cpu_seconds(operator.proc.pid)
            requests = api_requests(cluster)
            started = create_all(cluster, namespace, count)
            created = time.perf_counter()
            deadline = time.monotonic() + timeout
            while not finished.done.wait(0.5):
                operator.check()
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{count} jobs: {len(finished.succeeded)} Succeeded after {timeout:.0f} s"
                    )
            if finished.failed:
                name, why = next(iter(finished.failed.items()))
                raise RuntimeError(f"{len(finished.failed)} jobs Failed, e.g. {name}: {why}")
            ended = max(finished.succeeded.values())
            seconds = ended - started
            cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
            operator_cpu = cpu_seconds(operator.proc.pid) - operator_cpu
            reconciles, _, buckets = histogram(operator.metrics(), "smartthumb_reconcile_seconds")
            rss = peak_rss_mb(operator.proc.pid)
            rounds = operator.health()["sweep"]["sweep_rounds"]
            after = api_requests(cluster)
            requests = {key: after[key] - requests.get(key, 0.0) for key in after}
        finally:
            finished.stop()
    apiserver = cpu.pop("kube-apiserver")
    return {
        "jobs": count,
        "create_s": created - started,
        "seconds": seconds,
        "jobs_per_s": count / seconds,
        "reconciles_per_s": reconciles / seconds,
        "reconciles_per_job": reconciles / count,
        "median_ms": quantile(buckets, 0.5) * 1000,
        "rss_mb": rss,
        "operator_cpu_s": operator_cpu,
        "apiserver_cpu_s": apiserver,
        "rest_cpu_s": sum(cpu.values()),
        "rounds": rounds,
        "requests": requests,
    }


def interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[300, 3000])
    parser.add_argument("--max-running", type=int, default=50)
    parser.add_argument(
        "--controller-qps",
        type=int,
        default=200,
        help="client QPS of kube-controller-manager; 0: its default (20)",
    )
    parser.add_argument(
        "--requests",
        action="store_true",
        help="also print the API server's busiest request kinds per job",
    )
    parser.add_argument(
        "--timeout", type=float, default=600, help="seconds one run may take before it is given up"
    )
    args = parser.parse_args()
    bin_dir = testbin_dir()
    missing = missing_binaries(bin_dir)
    if missing:
        print(f"missing in {bin_dir}: {', '.join(missing)} (run `make testbin`)", file=sys.stderr)
        return 2
    # A short path: some components put unix sockets under their working directory.
    workdir = Path(tempfile.mkdtemp(prefix="st-bench-"))
    # SIGTERM (a CI time-out, `kill`) unwinds like Ctrl-C: every `finally` below runs.
    signal.signal(signal.SIGTERM, interrupt)
    rows = []
    try:
        volume = workdir / "volume"
        (volume / "in").mkdir(parents=True)
        (volume / "in" / "photo.jpg").write_bytes(b"\xff\xd8 a photo")  # kwok never opens it
        if args.controller_qps:
            bin_dir = controller_qps_bin(bin_dir, workdir, args.controller_qps)
        with start_kube_cluster(bin_dir, workdir / "kube") as cluster:
            install_crd(cluster)
            with cluster.api_client() as api:
                for index, count in enumerate(args.jobs):
                    last = index == len(args.jobs) - 1
                    rows.append(
                        run_one(
                            cluster,
                            api,
                            volume,
                            workdir,
                            count,
                            args.max_running,
                            args.timeout,
                            last,
                        )
                    )
                    print(f"{count} jobs: {rows[-1]['seconds']:.1f} s", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    command = " ".join(["bench/bench_operator.py", *sys.argv[1:]])
    qps = args.controller_qps or "default (20)"
    print(
        f"kwok control plane, {os.cpu_count()} CPUs, admission limit {args.max_running}, "
        f"controller-manager QPS {qps}, Python {sys.version.split()[0]}, "
        f"{time.strftime('%Y-%m-%d')}\n"
    )
    print(
        "| jobs | s to all Succeeded | jobs/s | reconciles/s | reconciles/job "
        "| reconcile p50 ms (decide+write) | sweep rounds | operator peak RSS MB "
        "| operator CPU s | apiserver CPU s | other control plane CPU s | target |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for row in rows:
        print(
            f"| {row['jobs']} | {row['seconds']:.1f} | {row['jobs_per_s']:.1f} "
            f"| {row['reconciles_per_s']:.1f} | {row['reconciles_per_job']:.1f} "
            f"| {row['median_ms']:.1f} | {row['rounds']} | {row['rss_mb']:.0f} "
            f"| {row['operator_cpu_s']:.1f} | {row['apiserver_cpu_s']:.1f} "
            f"| {row['rest_cpu_s']:.1f} | {TARGETS.get(row['jobs'], '')} |"
        )
    if args.requests:
        for row in rows:
            busiest = sorted(row["requests"].items(), key=lambda item: -item[1])
            print(
                f"\nAPI requests per job, {row['jobs']} jobs: "
                + ", ".join(
                    f"{verb} {resource} {n / row['jobs']:.1f}"
                    for (verb, resource), n in busiest
                    if n / row["jobs"] >= 0.05
                )
            )
    creates = ", ".join(f"{row['create_s']:.1f} s" for row in rows)
    print(f"\ncreating them took {creates}; command: .venv/bin/python {command}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
