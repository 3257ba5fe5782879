"""Helpers for the device tests: test images, bundle copies, an odd-shaped model.

The bundle itself is ``tiny_bundle`` from ``conftest.py``: a HENet repeat 1
trained briefly on images whose dominant colour channel is the class
(labels ``blue``, ``green``, ``red``), with golden images and their desktop
logits in ``golden.json``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image


def colour_pixels(channel: int, seed: int = 0, size: tuple[int, int] = (48, 40)) -> np.ndarray:
    """RGB ``uint8 (h, w, 3)`` noise whose ``channel`` (0 R, 1 G, 2 B) dominates."""
    rng = np.random.default_rng(seed)
    w, h = size
    pixels = rng.integers(0, 90, size=(h, w, 3), dtype=np.uint8)
    pixels[..., channel] = rng.integers(150, 256, size=(h, w), dtype=np.uint8)
    return pixels


def colour_image(channel: int, seed: int = 0, size: tuple[int, int] = (48, 40)) -> Image.Image:
    return Image.fromarray(colour_pixels(channel, seed, size))


def structured_image(seed: int, size: tuple[int, int] = (48, 40)) -> Image.Image:
    """Blocks of random colour plus noise: orientation and channel order matter."""
    rng = np.random.default_rng(seed)
    w, h = size
    blocks = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    pixels = np.kron(blocks, np.ones((h // 4 + 1, w // 4 + 1, 1), dtype=np.uint8))[:h, :w]
    noise = rng.integers(-20, 21, size=pixels.shape)
    return Image.fromarray(np.clip(pixels.astype(int) + noise, 0, 255).astype(np.uint8))


def golden(bundle: Path) -> list[dict]:
    """The bundle's golden entries (file, label, keras/float32/int8 logits)."""
    return json.loads((bundle / "golden.json").read_text())["images"]


def copy_bundle(bundle: Path, dest: Path) -> Path:
    """A private copy of the bundle that a test may damage."""
    return Path(shutil.copytree(bundle, dest))


def rewrite_manifest(bundle: Path, **changes) -> None:
    """Change top-level manifest fields (the manifest is not in its own hash list)."""
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest, indent=1))


def wrong_shape_model(folder: Path, classes: int) -> Path:
    """A float32 ``.tflite`` with a 32x32 input (HENet takes 31x31) and ``classes`` outputs."""
    path = folder / "wrong_shape.tflite"
    if path.is_file():
        return path
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import tensorflow as tf

    inputs = keras.Input((32, 32, 3), batch_size=1)
    outputs = keras.layers.Dense(classes)(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, outputs)
    folder.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return path
