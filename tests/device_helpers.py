"""Helpers for the device tests: test images, bundle copies, an odd-shaped model.

The bundle itself is ``tiny_bundle`` from ``conftest.py``: a HENet repeat 1
trained briefly on images whose dominant colour channel is the class
(labels ``blue``, ``green``, ``red``), with golden images and their desktop
logits in ``golden.json``.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import zlib
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


VCGENCMD = """#!/bin/sh
# A stand-in for the Raspberry Pi's vcgencmd: answers from files beside it.
# get_throttled answers with the next line of throttled.txt on each call.
dir=$(dirname "$0")
case "$1" in
  measure_temp) cat "$dir/temp.txt" ;;
  get_throttled)
    n=$(cat "$dir/calls" 2>/dev/null || echo 0)
    echo $((n + 1)) > "$dir/calls"
    line=$(sed -n "$((n + 1))p" "$dir/throttled.txt")
    [ -n "$line" ] || line=$(tail -n 1 "$dir/throttled.txt")
    echo "throttled=$line" ;;
  *) echo "unknown command" >&2; exit 1 ;;
esac
"""


def fake_pi(root: Path, *, governor: str = "performance", throttled: tuple[str, ...] = ("0x0",),
            temp: str = "temp=48.3'C") -> tuple[Path, list[str]]:
    """Lay out a Raspberry Pi 4's /proc, /sys and /etc under ``root``, plus a vcgencmd.

    Returns the root and the vcgencmd command to pass to ``Probe``.
    """
    files = {
        "proc/device-tree/model": "Raspberry Pi 4 Model B Rev 1.4\x00",
        "proc/cpuinfo": "processor\t: 0\nBogoMIPS\t: 108.00\nCPU implementer\t: 0x41\n"
                        "CPU part\t: 0xd08\n\nHardware\t: BCM2835\n"
                        "Model\t\t: Raspberry Pi 4 Model B Rev 1.4\n",
        "sys/class/thermal/thermal_zone0/temp": "48312\n",
        "sys/class/thermal/thermal_zone0/type": "cpu-thermal\n",
        "etc/os-release": 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n',
        "proc/sys/kernel/osrelease": "6.6.51+rpt-rpi-v8\n",
    }
    for core in range(max(4, os.cpu_count() or 1)):  # a Pi 4 has 4; cover this machine too
        base = f"sys/devices/system/cpu/cpu{core}/cpufreq"
        files[f"{base}/scaling_governor"] = governor + "\n"
        files[f"{base}/scaling_cur_freq"] = "1500000\n"
        files[f"{base}/scaling_max_freq"] = "1800000\n"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    tools = root / "opt" / "vc" / "bin"
    tools.mkdir(parents=True)
    script = tools / "vcgencmd"
    script.write_text(VCGENCMD)
    script.chmod(0o755)
    (tools / "temp.txt").write_text(temp + "\n")
    (tools / "throttled.txt").write_text("\n".join(throttled) + "\n")
    return root, [str(script)]


def png_header(path: Path, width: int, height: int, depth: int = 8, colour: int = 2) -> Path:
    """A tiny PNG whose IHDR declares this size, bit depth and colour type (no real data)."""
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[24], data[25] = depth, colour
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    path.write_bytes(bytes(data))
    return path
