"""A real S3-compatible server for the tests: versitygw (posix backend: each bucket a folder,
each object a file), built by hack/testbin.sh, on a free port of every address of this
machine, so runner pods on the real node reach it at the node's bridge address."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubecluster import _require_cluster, free_port, testbin_dir, wait_for

BUCKET = "thumbs"


@dataclass
class S3Server:
    port: int
    root: Path
    access_key: str
    secret_key: str

    def endpoint(self, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}"

    def objects(self, bucket: str = BUCKET) -> list[str]:
        """Every object key in `bucket`, read from the server's own folder."""
        folder = self.root / bucket
        return sorted(
            path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file()
        )

    def settings(self, host: str = "127.0.0.1") -> dict[str, str]:
        """The SMARTTHUMB_* storage settings (field names) for this server."""
        return {
            "storage": "s3",
            "s3_bucket": BUCKET,
            "s3_endpoint": self.endpoint(host),
            "s3_access_key_id": self.access_key,
            "s3_secret_access_key": self.secret_key,
        }


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    binary = testbin_dir() / "versitygw"
    if not binary.is_file():
        message = "no versitygw: run hack/testbin.sh (make testbin)"
        if _require_cluster():
            pytest.fail(message)
        pytest.skip(message)
    root = Path(tempfile.mkdtemp(prefix="st-s3-", dir="/tmp"))
    (root / BUCKET).mkdir()
    server = S3Server(free_port(), root, "smartthumb", uuid.uuid4().hex)
    log = open(root.parent / f"{root.name}.log", "wb")  # noqa: SIM115 - handed to the child
    process = subprocess.Popen(
        [
            str(binary),
            "--access",
            server.access_key,
            "--secret",
            server.secret_key,
            "--port",
            f":{server.port}",
            "posix",
            "--nometa",
            str(root),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for("versitygw", lambda: _answers(server), None, 30)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        shutil.rmtree(root, ignore_errors=True)
        Path(log.name).unlink(missing_ok=True)


def _answers(server: S3Server) -> bool:
    import httpx

    try:
        httpx.get(server.endpoint(), timeout=1)
    except httpx.HTTPError:
        return False
    return True
