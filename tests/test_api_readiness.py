"""/readyz follows the engine's health: a killed runner fork server makes it 503 until the
engine has restarted it, and jobs run again afterwards."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
from apiserver import b64, encode, live_server, wait_done
from PIL import Image
from test_engine_support import fork_server_pid, wait_until

PNG = b64(encode(Image.new("RGB", (40, 30), "green"), "PNG"))
FIT = {"mode": "fit", "width": 20, "image_files": [{"filename": "g.png", "content_base64": PNG}]}


def test_readyz_is_503_while_the_fork_server_is_down_and_recovers(tmp_path: Path) -> None:
    with (
        live_server(tmp_path, sweep_interval_s=0.5) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        assert client.get("/readyz").status_code == 200
        first = fork_server_pid()
        assert first is not None
        os.kill(first, signal.SIGKILL)
        answers: list[httpx.Response] = []

        def unready() -> bool:
            answers.append(client.get("/readyz"))
            return answers[-1].status_code == 503

        wait_until(unready, timeout=10)
        assert answers[-1].json() == {
            "ready": False,
            "reason": "the runner fork server or an engine thread is down",
        }
        wait_until(lambda: client.get("/readyz").status_code == 200, timeout=20)
        assert fork_server_pid() not in (None, first)
        job = client.post("/thumbnail", json=FIT).json()
        assert wait_done(client, job["job_id"])["status"] == "done"
