"""The one preprocessing function, shared by training, evaluation and the device.

An image of any size and mode becomes the model input in three steps:

1. ``open_image``: decode a regular file, refusing bombs by declared pixels
   and by decoded bytes; a big JPEG decodes at a reduced scale (draft mode).
2. ``canonical``: cut the centre square, reduce it by whole factors while
   converting it to 8-bit RGB strip by strip (palette, grayscale, CMYK,
   16-bit; alpha composited on white), honour EXIF orientation, and resize it
   to ``canonical_size`` (bilinear). Memory is bounded by the output, not the
   input. CIFAR's 32x32 images pass through unchanged.
3. ``normalize`` of the centre ``input_size`` crop: ``(x / 255 - mean) / std``.

Training augments between steps 2 and 3 (pad, random crop, flip) and then
calls the same ``normalize``; it works on numpy arrays and on tensors alike.
"""

from __future__ import annotations

import os
import struct
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from .inputs import IMAGE_FORMATS, IMAGE_KINDS, open_regular

# Per-channel statistics of the CIFAR-10 training set (RGB, 0..1).
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)

# Refuse images whose declared size is larger than this (decompression bombs).
MAX_PIXELS = 64_000_000
# ... and those whose decoded pixels would take more than this many bytes
# (Pillow keeps RGB, RGBA, CMYK and 32-bit pixels in 4 bytes, 16-bit in 2).
MAX_DECODED_BYTES = 64_000_000
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
_DEEP_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_STRIP_BYTES = 4_000_000  # a converted strip's size: the working memory beyond the image
_REDUCING_GAP = 3.0
_ORIENTATION = 0x0112
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
              6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}


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


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1: as stored); corrupt EXIF counts as none."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about corrupt EXIF blocks
        try:
            return int(image.getexif().get(_ORIENTATION, 1) or 1)
        except Exception:  # EXIF parsing errors come in many types
            return 1


def _orient(image: Image.Image, orientation: int) -> Image.Image:
    method = _TRANSPOSE.get(orientation)
    return image if method is None else image.transpose(method)


def _rgb8(piece: Image.Image, peak: int) -> Image.Image:
    """8-bit RGB of one (small) piece of an image; alpha, and the one transparent colour
    a palette, grey or RGB PNG (or GIF) may name, composited on white."""
    if piece.mode in _DEEP_MODES:
        # 16/32-bit integers to 8 bits, rounded, in integer arithmetic (no float64)
        a = np.clip(np.asarray(piece).astype(np.int64), 0, peak)
        piece = Image.fromarray(((a * 510 + peak) // (2 * peak)).astype(np.uint8), "L")
    keyed = piece.mode in ("P", "L", "RGB") and "transparency" in piece.info
    if piece.mode in ("RGBA", "LA", "PA") or keyed:
        piece = piece.convert("RGBA")
        background = Image.new("RGBA", piece.size, (255, 255, 255, 255))
        piece = Image.alpha_composite(background, piece)
    return piece.convert("RGB")


def reduced_rgb(image: Image.Image, box: tuple[int, int, int, int] | None = None,
                factor: int = 1) -> Image.Image:
    """8-bit RGB of ``box`` (default: all) of ``image``, box-averaged by ``factor``.

    Converted strip by strip, so the memory used beyond the decoded image is
    the (reduced) result plus one strip, whatever the mode: 16-bit, palette,
    alpha and CMYK images never get a full-size converted copy.
    """
    left, top, right, bottom = box or (0, 0, *image.size)
    width, height = right - left, bottom - top
    peak = 255
    if image.mode.startswith("I;16"):
        peak = 65535
    elif image.mode == "I":
        peak = 65535 if image.getextrema()[1] > 255 else 255
    rows = max(factor, _STRIP_BYTES // max(1, width * 4) // factor * factor)
    out = Image.new("RGB", (-(-width // factor), -(-height // factor)))
    for y in range(top, bottom, rows):
        piece = _rgb8(image.crop((left, y, right, min(bottom, y + rows))), peak)
        if factor > 1:
            piece = piece.reduce(factor)
        out.paste(piece, (0, (y - top) // factor))
    return out


def to_rgb(image: Image.Image, min_side: int | None = None) -> Image.Image:
    """Orientation-corrected 8-bit RGB version of any PIL image.

    With ``min_side``, reduced by the largest whole factor that keeps the
    shorter side at least that long (a camera-sized frame of a huge image).
    """
    factor = max(1, min(image.size) // min_side) if min_side else 1
    return _orient(reduced_rgb(image, None, factor), _orientation(image))


def _stored_offsets(w: int, h: int, side: int, orientation: int) -> tuple[int, int]:
    """Where the centre square of the image *as displayed* starts in the stored pixels.

    The centre is taken (rounding down) in the displayed image, then mapped back
    through the flips its EXIF orientation makes: rounding down in the stored pixels
    put a mirrored image's square one pixel off from that of the same photo saved
    upright.
    """
    swapped = orientation in (5, 6, 7, 8)  # displayed x runs along stored y
    dw, dh = (h, w) if swapped else (w, h)
    dx, dy = (dw - side) // 2, (dh - side) // 2
    if not swapped:
        return ((w - side) - dx if orientation in (2, 3) else dx,
                (h - side) - dy if orientation in (3, 4) else dy)
    return ((w - side) - dy if orientation in (7, 8) else dy,
            (h - side) - dx if orientation in (6, 7) else dx)


def canonical(image: Image.Image, size: int = DEFAULT.canonical_size) -> np.ndarray:
    """Centre square, resized to ``size``: uint8 ``(size, size, 3)``.

    The cost is bounded by the output, not the input: the centre square is
    cut first (a thin strip's is tiny), reduced by whole factors while it is
    converted to 8-bit RGB (as ``reducing_gap=3`` would), then oriented by
    its EXIF tag and resized (bilinear).
    """
    w, h = image.size
    side = min(w, h)
    orientation = _orientation(image)
    left, top = _stored_offsets(w, h, side, orientation)
    factor = max(1, int(side / size / _REDUCING_GAP))
    square = reduced_rgb(image, (left, top, left + side, top + side), factor)
    square = _orient(square, orientation)
    if square.size != (size, size):
        square = square.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(square, dtype=np.uint8)


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


def _bomb_message(fp: BinaryIO, max_pixels: int) -> str:
    """Why Pillow refused a header as a bomb: a negative BMP size, or too many pixels."""
    try:
        fp.seek(0)
        head = fp.read(26)
    except (OSError, ValueError):
        head = b""
    if head[:2] == b"BM" and len(head) >= 26:
        (width,) = struct.unpack("<i", head[18:22])  # a negative height is top-down
        if width <= 0:
            return f"corrupt BMP header: width {width}"
    return (f"image declares too many pixels, over the {max_pixels:,} limit "
            "(refused before decoding)")


def _filler_rows(image: Image.Image) -> int:
    """Rows at the bottom of a decoded JPEG that are libjpeg's grey filler for missing data."""
    width, height = image.size
    grey = np.full(len(image.getbands()), 128, np.uint8)
    rows = max(1, _STRIP_BYTES // max(1, width * 4))
    filler = 0
    for bottom in range(height, 0, -rows):
        strip = np.asarray(image.crop((0, max(0, bottom - rows), width, bottom)))
        strip = strip.reshape(strip.shape[0], width, -1)
        flat = np.all(strip == grey[: strip.shape[2]], axis=(1, 2))
        if flat.all():
            filler += len(flat)
            continue
        return filler + int(np.argmin(flat[::-1]))
    return filler


def draft(image: Image.Image, size: int | None) -> None:
    """Let a JPEG decode at a reduced scale (1/2 to 1/8) that keeps both sides at least
    ``size``: done before every decode for the model (training, evaluation and the
    device alike), so one file gives one array everywhere."""
    if size and image.format == "JPEG":
        image.draft(image.mode, (size, size))


def open_image(path: str | os.PathLike | BinaryIO, max_pixels: int = MAX_PIXELS, *,
               draft_size: int | None = None,
               max_bytes: int = MAX_DECODED_BYTES) -> Image.Image:
    """Open and fully decode an image file (a path or a binary file object), refusing
    decompression bombs.

    Only regular files are opened (a FIFO or a device is an error, not a
    hang). ``draft_size`` lets a JPEG decode at a reduced scale (1/2 to 1/8)
    that keeps both sides at least that large. Raises ``ValueError`` for
    files that are not JPEG, PNG, BMP or WebP images (no other decoder is
    tried), are truncated or corrupt, declare more than
    ``max_pixels`` pixels or would take more than ``max_bytes`` decoded (both
    checked before any pixel buffer is allocated), or are mostly grey filler
    (a truncated or forged JPEG that the decoder padded).
    """
    from PIL import UnidentifiedImageError

    if isinstance(path, (str, os.PathLike)):
        with open_regular(path) as fp:
            if os.fstat(fp.fileno()).st_size == 0:
                raise ValueError("empty file (0 bytes)")
            return open_image(fp, max_pixels, draft_size=draft_size, max_bytes=max_bytes)
    fp = path
    with warnings.catch_warnings():
        # Pillow warns above its own bomb limit (we apply ours, just below) and
        # about corrupt EXIF blocks; neither belongs on the user's terminal.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        warnings.simplefilter("ignore", UserWarning)
        try:
            image = Image.open(fp, formats=IMAGE_FORMATS)
        except UnidentifiedImageError as exc:
            raise ValueError(f"not an image file that is read here (only {IMAGE_KINDS}; "
                             f"unrecognised format)") from exc
        except Image.DecompressionBombError as exc:
            raise ValueError(_bomb_message(fp, max_pixels)) from exc
        except (OSError, SyntaxError, ValueError, struct.error) as exc:
            raise ValueError(f"truncated or corrupt image header ({exc})") from exc
        w, h = image.size
        kind = image.format or "image"
        if w <= 0 or h <= 0:
            raise ValueError(f"corrupt {kind} header: size {w}x{h}")
        if w * h > max_pixels:
            image.close()
            raise ValueError(f"image declares {w}x{h} pixels, over the {max_pixels:,} limit")
        draft(image, draft_size)
        need = image.size[0] * image.size[1] * _BYTES_PER_PIXEL.get(image.mode, 4)
        if need > max_bytes:
            raise ValueError(f"{w}x{h} {image.mode} {kind} needs {need / 1e6:.0f} MB "
                             f"decoded, over the {max_bytes / 1e6:.0f} MB limit")
        try:
            image.load()
        except (OSError, SyntaxError, ValueError, struct.error,
                Image.DecompressionBombError) as exc:
            raise ValueError(f"corrupt or truncated {kind} data ({exc}; "
                             f"{w}x{h} {image.mode})") from exc
    if image.format == "JPEG" and image.mode in ("L", "RGB"):
        filler = _filler_rows(image)
        if filler * 2 >= image.size[1]:
            raise ValueError(f"JPEG data ends early: the bottom {filler / image.size[1]:.0%} "
                             f"of the {w}x{h} image is decoder filler (a truncated or "
                             "forged file)")
    return image
