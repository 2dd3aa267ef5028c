"""Memory of the API under a burst of large uploads, against a real `smartthumb-api` process.

20 clients at once each send a 20 MB image (random pixels, PNG): as JSON (base64 in
`POST /thumbnail`, a 27 MB body) and, for comparison, as multipart (`POST /upload`, which
Starlette spools to disk). A fresh API process per scenario; figures are the median of
`--repeat` runs: the API process's peak RSS (VmHWM), its RSS 5 s after the burst, the
answers (202s, readable refusals, connection errors) and the median time to an answer.

    .venv/bin/python bench/bench_uploads.py [--clients 20] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from bench_http import RssSampler, start_server
from PIL import Image

SIDE = 2600  # 20.3 MB of RGB noise: just under SMARTTHUMB_MAX_INLINE_BYTES


def noise_png() -> bytes:
    pixels = np.random.default_rng(7).integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG", compress_level=0)
    return buffer.getvalue()


async def burst(url: str, clients: int, send: str, image: bytes) -> tuple[Counter[str], float]:
    encoded = base64.b64encode(image).decode()

    async def one(client: httpx.AsyncClient) -> tuple[str, float]:
        started = time.perf_counter()
        try:
            if send == "json":
                body = {"mode": "crop", "width": 200, "height": 200,
                        "image_files": [{"filename": "noise.png", "content_base64": encoded}]}  # fmt: skip
                answer = await client.post("/thumbnail", json=body)
            else:
                answer = await client.post("/upload", files={"file": ("noise.png", image)})
            outcome = str(answer.status_code)
        except httpx.TransportError as error:
            outcome = type(error).__name__
        return outcome, time.perf_counter() - started

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        results = await asyncio.gather(*(one(client) for _ in range(clients)))
    return Counter(outcome for outcome, _ in results), statistics.median(s for _, s in results)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def scenario(send: str, clients: int, image: bytes) -> tuple[float, float, Counter[str], float]:
    with tempfile.TemporaryDirectory(prefix="st-bench-uploads-") as data_dir:
        process, url = start_server(Path(data_dir), workers=1)
        try:
            sampler = RssSampler(process.pid)
            sampler.start()
            outcomes, median_s = asyncio.run(burst(url, clients, send, image))
            time.sleep(5)
            after = rss_mib(process.pid)
            peak, _ = sampler.stop()
        finally:
            process.kill()
            process.wait()
    return peak, after, outcomes, median_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    image = noise_png()
    rows = {}
    for send in ("json", "multipart"):
        runs = [scenario(send, args.clients, image) for _ in range(args.repeat)]
        rows[send] = (
            statistics.median(run[0] for run in runs),
            statistics.median(run[1] for run in runs),
            sum((run[2] for run in runs), Counter()),
            statistics.median(run[3] for run in runs),
        )
    print(f"\n{args.clients} clients at once, one {len(image) / 1e6:.1f} MB PNG each, "
          f"median of {args.repeat} fresh API processes")  # fmt: skip
    header = f"{'upload':10} {'peak RSS MiB':>12} {'RSS after MiB':>13} {'median s':>9}  answers"
    print(header)
    print("-" * len(header))
    for send, (peak, after, outcomes, median_s) in rows.items():
        answers = ", ".join(f"{count} x {outcome}" for outcome, count in sorted(outcomes.items()))
        print(f"{send:10} {peak:>12.0f} {after:>13.0f} {median_s:>9.2f}  {answers}")
    ratio = rows["json"][0] / rows["multipart"][0]
    print(f"peak RSS, JSON / multipart: {ratio:.2f}")


if __name__ == "__main__":
    main()
