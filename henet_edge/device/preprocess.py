"""The one preprocessing function, shared by training, evaluation and the device.

An image of any size and mode becomes the model input in three steps:

1. ``to_rgb``: honour EXIF orientation; convert palette, grayscale, CMYK, RGBA
   (composited on white) and 16-bit images to 8-bit RGB.
2. ``canonical``: resize so the shorter side is ``canonical_size`` (bilinear,
   with reducing_gap for large photos), then centre-crop a square. CIFAR's
   32x32 images pass through unchanged.
3. ``normalize`` of the centre ``input_size`` crop: ``(x / 255 - mean) / std``.

Training augments between steps 2 and 3 (pad, random crop, flip) and then
calls the same ``normalize``; it works on numpy arrays and on tensors alike.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageOps

# Per-channel statistics of the CIFAR-10 training set (RGB, 0..1).
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)

# Refuse images whose declared size is larger than this (decompression bombs).
MAX_PIXELS = 64_000_000


@dataclass(frozen=True)
class Preprocessing:
    """Parameters of the shared preprocessing; saved with runs and in manifests."""

    canonical_size: int = 32
    input_size: int = 31
    mean: tuple[float, float, float] = CIFAR_MEAN
    std: tuple[float, float, float] = CIFAR_STD
    resample: str = "bilinear"
    color: str = "RGB"
    layout: str = "NHWC"
    name: str = field(default="henet-edge/v1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("mean", "std"):
            if key in known:
                known[key] = tuple(float(v) for v in known[key])
        return cls(**known)

    def crop_offset(self) -> int:
        return (self.canonical_size - self.input_size) // 2


DEFAULT = Preprocessing()


def to_rgb(image: Image.Image) -> Image.Image:
    """Orientation-corrected 8-bit RGB version of any PIL image."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


def canonical(image: Image.Image, size: int = DEFAULT.canonical_size) -> np.ndarray:
    """Shorter side resized to ``size``, centre square crop: uint8 ``(size, size, 3)``."""
    image = to_rgb(image)
    w, h = image.size
    if (w, h) != (size, size):
        scale = size / min(w, h)
        new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
        image = image.resize((new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=3.0)
        left, top = (new_w - size) // 2, (new_h - size) // 2
        image = image.crop((left, top, left + size, top + size))
    return np.asarray(image, dtype=np.uint8)


def normalize(pixels: Any, spec: Preprocessing = DEFAULT) -> Any:
    """``(pixels / 255 - mean) / std`` for uint8 or float arrays or tensors (NHWC or HWC)."""
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    if isinstance(pixels, np.ndarray):
        pixels = pixels.astype(np.float32)
    return (pixels / np.float32(255.0) - mean) / std


def center_crop(pixels: np.ndarray, spec: Preprocessing = DEFAULT) -> np.ndarray:
    """The centre ``input_size`` crop of canonical ``(..., S, S, 3)`` pixels."""
    o, n = spec.crop_offset(), spec.input_size
    return pixels[..., o : o + n, o : o + n, :]


def preprocess_pixels(pixels: np.ndarray, spec: Preprocessing = DEFAULT) -> np.ndarray:
    """Canonical uint8 pixels -> normalised float32 model input (evaluation path)."""
    return normalize(center_crop(pixels, spec), spec).astype(np.float32)


def preprocess_image(image: Image.Image, spec: Preprocessing = DEFAULT) -> np.ndarray:
    """Any PIL image -> float32 ``(input_size, input_size, 3)`` model input."""
    return preprocess_pixels(canonical(image, spec.canonical_size), spec)


def open_image(path: str | BinaryIO, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open and fully decode an image file (a path or a binary file object), refusing
    decompression bombs.

    Raises ``ValueError`` for files that are not images, are truncated or
    corrupt, or declare more than ``max_pixels`` pixels (checked before any
    pixel buffer is allocated).
    """
    import os
    import warnings

    from PIL import UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Pillow warns above its own limit and refuses above twice it; we
            # refuse everything over ``max_pixels`` ourselves, just below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except UnidentifiedImageError as exc:
        if isinstance(path, str) and os.path.isfile(path) and os.path.getsize(path) == 0:
            raise ValueError("empty file (0 bytes)") from exc
        raise ValueError("not an image file (unrecognised format)") from exc
    except Image.DecompressionBombError as exc:
        raise ValueError(f"image declares too many pixels, over the {max_pixels:,} limit "
                         "(refused before decoding)") from exc
    w, h = image.size
    if w * h > max_pixels:
        image.close()
        raise ValueError(f"image declares {w}x{h} pixels, over the {max_pixels:,} limit")
    try:
        image.load()
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"corrupt or truncated image: {exc}") from exc
    return image
