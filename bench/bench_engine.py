"""Throughput of the local engine alone (no HTTP): N concurrent resize jobs to 200x200, and
the engine's own CPU per job (this process's: the runners are the fork server's children).

    .venv/bin/python bench/bench_engine.py [--jobs 50] [--workers 2] [--size 1920x1080|1x1]

The source is skimage's astronaut photo resized to --size and saved as JPEG (1x1: a PNG, as
seed 002's benchmark script sends), so the figure covers real decoding, not only overhead.
"""

from __future__ import annotations

import argparse
import io
import resource
import statistics
import tempfile
import time
from pathlib import Path

from PIL import Image
from prometheus_client import CollectorRegistry
from skimage import data
from smartthumb.operator.backend import InputFile
from smartthumb.operator.local import EngineSettings, LocalEngine
from smartthumb.operator.metrics import Metrics
from smartthumb.runner.spec import ThumbnailSpec


def source(width: int, height: int) -> InputFile:
    image = Image.fromarray(data.astronaut()).resize((width, height))
    buffer = io.BytesIO()
    if width * height == 1:
        image.save(buffer, "PNG")
        return InputFile(name="pixel.png", data=buffer.getvalue())
    image.save(buffer, "JPEG", quality=90)
    return InputFile(name="photo.jpg", data=buffer.getvalue())


def _switches() -> int:
    """This process's context switches so far: each is a thread giving up the CPU to wait
    (voluntary) or being preempted."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_nvcsw + usage.ru_nivcsw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    width, height = (int(side) for side in args.size.split("x"))
    spec = ThumbnailSpec(mode="resize", width=200, height=200)
    item = source(width, height)
    with tempfile.TemporaryDirectory() as directory:
        options = {"workers": args.workers} if args.workers else {}
        settings = EngineSettings(data_dir=Path(directory), **options)
        engine = LocalEngine(settings, metrics=Metrics(CollectorRegistry()))
        engine.start()
        try:
            engine.wait(engine.submit(spec, [item]).id, 60)  # the fork server is warm
            for _ in range(args.rounds):
                started, cpu, switches = time.perf_counter(), time.process_time(), _switches()
                ids = [engine.submit(spec, [item]).id for _ in range(args.jobs)]
                jobs = [engine.wait(job_id, 300) for job_id in ids]
                elapsed = time.perf_counter() - started
                engine_ms = (time.process_time() - cpu) * 1000 / args.jobs
                per_job = (_switches() - switches) / args.jobs
                assert all(job.state.value == "done" for job in jobs)
                runs = [
                    (j.runs[-1].finished_at - j.runs[-1].started_at).total_seconds() for j in jobs
                ]
                print(
                    f"{args.jobs} jobs {args.size} -> 200x200, {settings.workers} workers: "
                    f"{elapsed:.2f} s, {args.jobs / elapsed:.1f} jobs/s, "
                    f"median run {statistics.median(runs) * 1000:.1f} ms, "
                    f"engine CPU {engine_ms:.2f} ms/job, {per_job:.1f} context switches/job"
                )
        finally:
            engine.stop()


if __name__ == "__main__":
    main()
