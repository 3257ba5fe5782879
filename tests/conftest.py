"""Shared fixtures: a small real JPEG data set, a short real training run, a real bundle."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# .ci/run installs every tool and service the tests use (sshd, Chromium, hadolint...):
# there a missing one is a failure, not a skip that would hide whole test modules.
IN_CI = os.environ.get("HENET_EDGE_CI") == "1"


def skip_unless_ci(missing: str | None) -> pytest.MarkDecorator:
    """Skip for want of ``missing`` (why a tool is unusable, or None) outside CI; in CI the
    tests run, and fail on what is missing."""
    return pytest.mark.skipif(missing is not None and not IN_CI, reason=missing or "")


def unavailable(reason: str) -> NoReturn:
    """Skip a test whose tool or service cannot be used here; in CI, fail it."""
    if IN_CI:
        pytest.fail(f"{reason} (HENET_EDGE_CI=1: CI installs it, so this is a failure)")
    pytest.skip(reason)


CLASSES = ("red", "green", "blue")
SHARED_CIFAR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / \
    "cifar10-train-jpeg.tar.gz"


def class_image(label: int, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """A noisy image whose dominant colour channel is the class."""
    img = rng.integers(0, 90, size=(size, size, 3), dtype=np.uint8)
    img[..., label] = rng.integers(150, 256, size=(size, size), dtype=np.uint8)
    return img


def write_image_folder(root: Path, per_class: int = 16, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for label, name in enumerate(CLASSES):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(class_image(label, rng)).save(folder / f"{i:04d}.jpg", quality=90)
    return root


def killed_after_last_epoch(run_dir: Path, copy: Path) -> Path:
    """A copy of a finished run as a kill between its last checkpoint and final models leaves it."""
    import json
    import shutil

    shutil.copytree(run_dir, copy)
    for name in ("model.keras", "best.keras", "summary.json"):
        (copy / name).unlink()
    state = json.loads((copy / "state.json").read_text())
    (copy / "state.json").write_text(json.dumps({**state, "finished": False}))
    return copy


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """3 classes x 16 real JPEG files laid out as root/<class>/*.jpg."""
    return write_image_folder(tmp_path_factory.mktemp("images") / "data")


@pytest.fixture(scope="session")
def tiny_run(image_folder, tmp_path_factory) -> Path:
    """A finished 2-epoch training run of HENet repeat 1 on ``image_folder``."""
    from henet_edge.henet_keras.train import TrainConfig, train

    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    config = TrainConfig(data=str(image_folder), model="henet", repeat=1, epochs=2,
                         batch_size=8, val_split=0.25, seed=0)
    train(config, run_dir, show_bar=False, echo=lambda _msg: None)
    return run_dir


@pytest.fixture(scope="session")
def tiny_bundle(tiny_run, image_folder, tmp_path_factory) -> Path:
    """A real converted bundle (float32 + int8 TFLite, golden images, manifest)."""
    from henet_edge.convert.pipeline import ConvertOptions, convert

    out = tmp_path_factory.mktemp("bundles") / "tiny"
    convert(tiny_run, str(image_folder), out, ConvertOptions(num=12, gate=False),
            log=lambda _msg: None)
    return out


@pytest.fixture(scope="session")
def int8(tiny_bundle):
    """The tiny bundle's int8 model as a classifier (top 3)."""
    from henet_edge.device.classify import Classifier

    return Classifier(tiny_bundle, precision="int8", top_k=3)
