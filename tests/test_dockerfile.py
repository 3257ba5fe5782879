"""Dockerfile.arm64: lint with hadolint and check what the device image must hold."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from .conftest import skip_unless_ci

DOCKERFILE = Path(__file__).resolve().parents[1] / "Dockerfile.arm64"


def _hadolint() -> str | None:
    local = Path(sys.executable).with_name("hadolint")
    return str(local) if local.exists() else shutil.which("hadolint")


@skip_unless_ci(None if _hadolint() else "hadolint not installed (dev extra)")
def test_hadolint_is_clean():
    proc = subprocess.run([_hadolint(), str(DOCKERFILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_device_image_contents():
    text = DOCKERFILE.read_text()
    instructions = [line.split()[0] for line in text.splitlines()
                    if line and not line.startswith(("#", " "))]
    assert "ARG BASE_IMAGE=python:3.11-slim-bookworm" in text
    assert "linux/arm64" in text
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert '".[device]"' in code and "tensorflow" not in code.lower()
    assert "--system-site-packages" in text
    assert "USER 1000" in text and "useradd" in text
    assert 'HEALTHCHECK' in instructions and '"henet-edge", "doctor"' in text
    assert 'ENTRYPOINT ["henet-edge"]' in text
