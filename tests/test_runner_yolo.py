"""The optional YOLO detector's plumbing, on an untrained model built from ultralytics' yaml.

ultralytics (AGPL-3.0, plus a multi-GB torch) is an optional extra, so it lives in its own
virtualenv, .venv-yolo, built by `make yolo`. Without it these tests are skipped, visibly.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from images import save_photo

YOLO_PYTHON = Path(__file__).resolve().parent.parent / ".venv-yolo" / "bin" / "python"

pytestmark = pytest.mark.skipif(not YOLO_PYTHON.exists(), reason="run `make yolo` first")


def run_in_yolo_venv(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ,
        THUMBNAIL_YOLO_MODEL="yolov8n.yaml",
        YOLO_CONFIG_DIR=str(tmp_path / "ultralytics"),
    )
    return subprocess.run(
        [str(YOLO_PYTHON), "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
        check=False,  # the tests assert on the exit code
    )


def test_untrained_model_runs_and_finds_no_people(tmp_path: Path) -> None:
    source = save_photo(tmp_path, "astronaut")
    code = (
        "import numpy as np; from PIL import Image\n"
        "from smartthumb.runner.subjects import yolo_people\n"
        f"rgb = np.asarray(Image.open({str(source)!r}).convert('RGB'))\n"
        "print(len(yolo_people(rgb, 'yolov8n.yaml')))\n"
    )
    result = run_in_yolo_venv(code, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "0"


def test_crop_with_yolo_configured_still_keeps_the_face(tmp_path: Path) -> None:
    source = save_photo(tmp_path, "astronaut")
    out = tmp_path / "yolo.jpg"
    code = (
        "from smartthumb.runner.cli import main\n"
        f"raise SystemExit(main(['crop', '--mode', 'crop', '--width', '200', '--height', '400',"
        f" '-o', {str(out)!r}, {str(source)!r}]))\n"
    )
    result = run_in_yolo_venv(code, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    document = json.loads(result.stdout.strip().splitlines()[-1])
    assert document["method"] == "crop:face", "untrained YOLO finds nobody; faces still decide"
    assert out.stat().st_size > 0
