"""`make cluster` as a newcomer uses it: it prints the API's URL and a KUBECONFIG line, the API
makes a thumbnail on the real node, `kubectl apply -f examples/crop.yaml` works, and Ctrl-C
leaves nothing behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from apiserver import b64, encode
from conftest import poll
from images import photo
from kubecluster import KubeCluster, free_port
from realnode import RealNode

pytestmark = [pytest.mark.cluster, pytest.mark.node]

REPO = Path(__file__).resolve().parent.parent


def test_make_cluster_serves_the_api_and_kubectl_and_cleans_up(
    kube_cluster: KubeCluster, real_node: RealNode, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "cluster.out"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, str(REPO / "hack" / "cluster.py")],
            env={**os.environ, "SMARTTHUMB_PORT": str(port)},
            stdout=out,
            stderr=out,
        )
    try:
        poll(
            "make cluster to be up",
            lambda: "Ctrl-C" in log.read_text() or process.poll() is not None,
            timeout=180,
        )
        printed = log.read_text()
        assert process.poll() is None, printed
        assert f"on http://127.0.0.1:{port}/" in printed
        kubeconfig = re.search(r"^KUBECONFIG=(\S+)$", printed, re.MULTILINE)
        assert kubeconfig, printed
        workdir = Path(kubeconfig.group(1)).parent.parent
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=30) as client:
            poll("the API to be ready", lambda: client.get("/readyz").status_code == 200)
            job = client.post(
                "/jobs",
                json={
                    "image_data": b64(encode(photo("coffee"), quality=90)),
                    "operation": "resize",
                    "width": 200,
                    "height": 100,
                },
            ).json()["job_id"]
            kubectl = [
                str(kube_cluster.bin_dir / "kubectl"),
                "--kubeconfig",
                kubeconfig.group(1),
                "-n",
                "smartthumb",
            ]
            subprocess.run(
                [*kubectl, "apply", "-f", str(REPO / "examples" / "crop.yaml")],
                check=True,
                capture_output=True,
            )
            poll(
                "the resize",
                lambda: client.get(f"/jobs/{job}").json()["status"] == "completed",
                timeout=120,
            )
            assert client.get(f"/jobs/{job}/download").headers["content-type"] == "image/jpeg"
            poll(
                "the kubectl-applied crop",
                lambda: (
                    subprocess.run(
                        [*kubectl, "get", "tj", "astronaut", "-o", "jsonpath={.status.phase}"],
                        capture_output=True,
                        text=True,
                        check=False,
                    ).stdout
                    == "Succeeded"
                ),
                timeout=120,
            )
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.returncode == 0, log.read_text()
    assert not workdir.exists()
    leftovers = subprocess.run(
        ["pgrep", "-f", str(workdir)], capture_output=True, text=True, check=False
    )
    assert leftovers.stdout == "", leftovers.stdout
