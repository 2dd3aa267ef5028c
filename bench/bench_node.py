"""Real pods on the real node: `kubectl apply` -> Succeeded for one crop, and 50
ThumbnailJobs with the admission limit at 4 (pods per second, peak memory of the runner pods
against their limits, read from the kubelet's cgroups while they run).

    .venv/bin/python bench/bench_node.py [--jobs 50] [--limit 4] [--singles 5]

Needs what the real-node tests need (root, make testbin, make images, hack/ensure-node.sh).
Starts its own control plane, real node and operator, and removes them all at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Self

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from images import save_photo
from kubecluster import start_kube_cluster, testbin_dir
from kubernetes import client
from operatorharness import Cluster, run_operator, thumbnail_job
from realnode import REAL_NODE_POD, image_tars, start_real_node

MEMORY = "512Mi"


class PeakMemory:
    """Samples memory.max_usage_in_bytes of every pod cgroup under the kubelet's root."""

    def __init__(self, cgroup_root: str, interval: float = 0.1) -> None:
        self._base = Path("/sys/fs/cgroup/memory") / cgroup_root.lstrip("/")
        self.peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._interval = interval
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            for usage in self._base.glob("kubepods*/**/pod*/memory.max_usage_in_bytes"):
                try:
                    value = int(usage.read_text())
                except (OSError, ValueError):
                    continue
                pod = usage.parent.name
                self.peaks[pod] = max(self.peaks.get(pod, 0), value)
            self._stop.wait(self._interval)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--limit", type=int, default=4)
    parser.add_argument("--singles", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="st-bench-node-", dir="/tmp"))
    volume = work / "volume"
    (volume / "photos").mkdir(parents=True)
    photo = save_photo(volume / "photos", "astronaut", size=(1920, 1080))
    for path in (work, volume, volume / "photos", photo):
        path.chmod(0o755 if path.is_dir() else 0o644)
    source = [{"path": str(photo.relative_to(volume))}]
    with start_kube_cluster(testbin_dir(), work / "kube") as cluster:
        cluster.kubectl(
            "apply", "--server-side", "-f", str(ROOT / "crds" / "thumbnailjobs.smartthumb.dev.yaml")
        )
        cluster.kubectl("wait", "--for=condition=Established", "crd/thumbnailjobs.smartthumb.dev")
        with start_real_node(cluster, image_tars()) as node, cluster.api_client() as api:
            client.CoreV1Api(api).create_namespace({"metadata": {"name": "bench"}})
            time.sleep(2)  # the namespace's ServiceAccount
            jobs = Cluster(api, "bench")
            settings = {
                "volume_host_path": str(volume),
                "max_running": str(args.limit),
                "runner_image": node.images["runner"],
                "fallback_image": node.images["operator"],
                "runner_node_selector": json.dumps(REAL_NODE_POD["nodeSelector"]),
                "runner_tolerations": json.dumps(REAL_NODE_POD["tolerations"]),
            }
            with run_operator(cluster, volume, **settings):
                singles = []
                for index in range(args.singles):
                    name = f"single-{index}"
                    started = time.perf_counter()
                    jobs.create(thumbnail_job(name, sources=source, resources={"memory": MEMORY}))
                    status = jobs.wait_phase(name, "Succeeded", "Failed", timeout=120)
                    assert status["phase"] == "Succeeded", status
                    singles.append(time.perf_counter() - started)
                with PeakMemory(node.cgroup_root) as memory:
                    started = time.perf_counter()
                    for index in range(args.jobs):
                        jobs.create(
                            thumbnail_job(
                                f"many-{index:03d}", sources=source, resources={"memory": MEMORY}
                            )
                        )
                    for index in range(args.jobs):
                        status = jobs.wait_phase(
                            f"many-{index:03d}", "Succeeded", "Failed", timeout=600
                        )
                        assert status["phase"] == "Succeeded", status
                    wall = time.perf_counter() - started
    peaks = sorted(memory.peaks.values())
    limit_mb = 512
    print(f"one crop, create -> Succeeded (1920x1080 JPEG, 300x300, {args.singles} runs):")
    print("| median | min | max |")
    print("|---:|---:|---:|")
    print(f"| {statistics.median(singles):.2f} s | {min(singles):.2f} s | {max(singles):.2f} s |")
    print()
    print(f"{args.jobs} ThumbnailJobs, admission limit {args.limit}:")
    print("| wall | pods/s | runner pod peak memory: median | max | limit | max/limit |")
    print("|---:|---:|---:|---:|---:|---:|")
    if peaks:
        median_mb = statistics.median(peaks) / 2**20
        top_mb = peaks[-1] / 2**20
        print(
            f"| {wall:.1f} s | {args.jobs / wall:.2f} | {median_mb:.0f} MiB | {top_mb:.0f} MiB "
            f"| {limit_mb} MiB | {top_mb / limit_mb:.0%} |"
        )
    print(
        f"\n({len(peaks)} pod cgroups sampled every 0.1 s; command: "
        f"{' '.join(['.venv/bin/python', 'bench/bench_node.py', *sys.argv[1:]])})"
    )


if __name__ == "__main__":
    main()
