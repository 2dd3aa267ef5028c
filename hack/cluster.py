"""`make cluster`: smartthumb in cluster mode on this machine, for a person to try.

The test suite's control plane (kube-apiserver, etcd, controllers, kwok) and its real node
(kubelet + containerd, the images of `make images`), the ThumbnailJob CRD, a namespace
`smartthumb` whose claim `thumbs` is a folder here (the shared volume, with sample photos
under photos/), the operator and the API (SMARTTHUMB_BACKEND=kubernetes) on
SMARTTHUMB_PORT (default 8080). Prints the API's URL and a `KUBECONFIG=` line; Ctrl-C stops
and removes all of it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from images import sample_volume
from kubecluster import KubeCluster, free_port, missing_binaries, start_kube_cluster, testbin_dir
from kubestack import CLAIM, claim_volume
from realnode import (
    REAL_NODE_POD,
    RealNode,
    ServicesBusy,
    image_tars,
    missing_prerequisites,
    node_services,
    start_real_node,
)
from smartthumb.operator.kube import crd

NAMESPACE = "smartthumb"
BIN = Path(sys.executable).parent


def _fail(message: str) -> None:
    print(f"make cluster: {message}", file=sys.stderr)
    sys.exit(2)


def _start(name: str, argv: list[str], env: dict[str, str], logs: Path) -> subprocess.Popen:
    log = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    return subprocess.Popen(argv, env={**os.environ, **env}, stdout=log, stderr=log)


@contextlib.contextmanager
def services(cluster: KubeCluster, node: RealNode) -> Iterator[None]:
    """kube-proxy, so that pods reach Services (a Helm install of the chart needs it); without
    it, while another runs on this machine, all but Services still works."""
    try:
        with node_services(cluster, node):
            yield
    except ServicesBusy as busy:
        print(f"make cluster: no Services for pods: {busy}", file=sys.stderr)
        yield


def install(cluster: KubeCluster, volume: Path) -> None:
    """The CRD, and the namespace with its claim on `volume`."""
    cluster.kubectl("apply", "--server-side", "-f", str(REPO / crd.OUTPUT))
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd.NAME}")
    cluster.kubectl("create", "namespace", NAMESPACE)
    with cluster.api_client() as api:
        claim_volume(api, NAMESPACE, volume)


def operator_env(
    cluster: KubeCluster, node: RealNode, volume: Path, api_url: str, **settings: str
) -> dict[str, str]:
    """smartthumb-operator's environment: the namespace's jobs as pods on the real node;
    `settings`: more SMARTTHUMB_* values by field name."""
    return {
        "KUBECONFIG": str(cluster.kubeconfig),
        "SMARTTHUMB_VOLUME_PATH": str(volume),
        "SMARTTHUMB_NAMESPACES": NAMESPACE,
        "SMARTTHUMB_VOLUME_CLAIM": CLAIM,
        "SMARTTHUMB_RUNNER_IMAGE": node.images["runner"],
        "SMARTTHUMB_FALLBACK_IMAGE": node.images["operator"],
        "SMARTTHUMB_RUNNER_NODE_SELECTOR": json.dumps(REAL_NODE_POD["nodeSelector"]),
        "SMARTTHUMB_RUNNER_TOLERATIONS": json.dumps(REAL_NODE_POD["tolerations"]),
        "SMARTTHUMB_LEASE_NAMESPACE": NAMESPACE,
        "SMARTTHUMB_PUBLIC_URL": api_url,
        "SMARTTHUMB_LIVENESS_PORT": str(free_port()),
        "SMARTTHUMB_METRICS_PORT": str(free_port()),
        **{f"SMARTTHUMB_{name.upper()}": value for name, value in settings.items()},
    }


def api_env(cluster: KubeCluster, volume: Path, port: int | str, **settings: str) -> dict[str, str]:
    """smartthumb-api's environment in cluster mode."""
    return {
        "KUBECONFIG": str(cluster.kubeconfig),
        "SMARTTHUMB_VOLUME_PATH": str(volume),
        "SMARTTHUMB_BACKEND": "kubernetes",
        "SMARTTHUMB_NAMESPACE": NAMESPACE,
        "SMARTTHUMB_PORT": str(port),
        **{f"SMARTTHUMB_{name.upper()}": value for name, value in settings.items()},
    }


def _wait_ready(url: str, processes: list[subprocess.Popen], workdir: Path) -> None:
    """Until the API says it can take jobs: only then is the URL worth printing."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                _fail(f"{process.args[0]} exited ({process.returncode}); see {workdir}")
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:  # not listening yet, or 503 while it starts
            pass
        time.sleep(0.5)
    _fail(f"the API was not ready within 180 s; see {workdir}")


def _stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main() -> None:
    if os.geteuid() != 0:
        _fail("the real node needs root (kubelet, containerd, network namespaces)")
    bin_dir = testbin_dir()
    missing = missing_binaries(bin_dir) + missing_prerequisites(bin_dir)
    if missing:
        _fail(f"missing {', '.join(missing)}: run `make testbin node images` first")
    port = os.environ.get("SMARTTHUMB_PORT", "8080")
    workdir = Path(tempfile.mkdtemp(prefix="st-cluster-", dir="/tmp"))
    volume = workdir / "volume"
    volume.mkdir()
    sample_volume(volume)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    processes: list[subprocess.Popen] = []
    try:
        with (
            start_kube_cluster(bin_dir, workdir / "kube") as cluster,
            start_real_node(cluster, image_tars()) as node,
            services(cluster, node),
        ):
            install(cluster, volume)
            url = f"http://127.0.0.1:{port}"
            processes.append(
                _start(
                    "operator",
                    [str(BIN / "smartthumb-operator")],
                    operator_env(cluster, node, volume, url),
                    workdir,
                )
            )
            processes.append(
                _start(
                    "api", [str(BIN / "smartthumb-api")], api_env(cluster, volume, port), workdir
                )
            )
            try:
                _wait_ready(f"{url}/readyz", processes, workdir)
                print(f"smartthumb API (cluster mode) on {url}/ (docs at /docs)")
                print(f"KUBECONFIG={cluster.kubeconfig}")
                print(f"PATH={bin_dir}:$PATH  # kubectl")
                print(
                    f"shared volume: {volume} (photos/ and chapter-1/ for examples/); "
                    f"logs in {workdir}"
                )
                print(
                    "try: kubectl -n smartthumb apply -f examples/crop.yaml; "
                    "kubectl -n smartthumb get tj -w"
                )
                print("Ctrl-C stops all of it.", flush=True)
                while not stop.wait(1):
                    for process in processes:
                        if process.poll() is not None:
                            _fail(f"{process.args[0]} exited ({process.returncode}); see {workdir}")
            finally:  # before the cluster goes: they shut down cleanly while it answers
                _stop(processes)
    finally:
        _stop(processes)  # if the cluster failed under them
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
