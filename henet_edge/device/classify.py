"""Classify images with a bundle or a bare ``.tflite``: ``henet-edge classify``.

A :class:`Classifier` wraps one TFLite model, its labels and the shared
preprocessing. Images go through :func:`~henet_edge.device.preprocess.open_image`
(decode, decompression-bomb guard) and
:func:`~henet_edge.device.preprocess.preprocess_image` (the training
preprocessing), then the interpreter; each stage is timed.

:func:`classify_paths` walks files and folders and yields one
:class:`FileResult` per image, errors included, so a bad file never stops the
rest.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from henet_edge import HenetEdgeError

from .bundle import MANIFEST, PRECISIONS, Bundle, is_bundle, load_bundle
from .inputs import iter_inputs, json_path, printable, read_labels
from .manifest import LABELS_FILE
from .preprocess import DEFAULT, open_image, preprocess_image
from .runtime import MAX_THREADS, Quant, RuntimeInfo, TFLiteModel, open_model, softmax

HOME_ENV = "HENET_EDGE_HOME"
DEFAULT_BUNDLE = Path(__file__).parent / "assets" / "default_bundle"


class ClassifyError(HenetEdgeError, ValueError):
    """A model, labels file or option that cannot be used for classification."""


# ------------------------------------------------------------------ model lookup
def edge_home() -> Path:
    """The device's state folder: ``$HENET_EDGE_HOME`` or ``~/.henet-edge``."""
    value = os.environ.get(HOME_ENV)
    return Path(value).expanduser() if value else Path.home() / ".henet-edge"


def installed_bundle() -> Path:
    """Where the deployed bundle lives (a ``current`` symlink, possibly absent)."""
    return edge_home() / "current"


def default_model() -> Path:
    """The model used when ``--model`` is omitted.

    The installed ``current`` bundle if there is one (even a broken one, so
    its problem is reported rather than silently bypassed), else the default
    bundle shipped inside the package.
    """
    current = installed_bundle()
    if current.is_symlink() or current.exists():
        return current
    if (DEFAULT_BUNDLE / MANIFEST).is_file():
        return DEFAULT_BUNDLE
    raise ClassifyError(f"no model: none installed at {current} and no default bundle "
                        "shipped; pass --model BUNDLE_FOLDER (or a .tflite with --labels), "
                        "or deploy one with `henet-edge deploy`")


# ------------------------------------------------------------------ results
@dataclass
class Prediction:
    """Top-k labels and probabilities for one image, with stage timings in ms."""

    top: list[tuple[str, float]]
    logits: list[float]
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.top[0][0]

    @property
    def probability(self) -> float:
        return self.top[0][1]

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "probability": round(self.probability, 6),
                "top": [{"label": lab, "probability": round(p, 6)} for lab, p in self.top],
                "logits": [round(v, 6) for v in self.logits],
                "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()}}


@dataclass
class FileResult:
    """The outcome for one input path: a prediction or an error message."""

    path: str
    prediction: Prediction | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        name = json_path(self.path)
        if self.prediction is None:
            return {**name, "ok": False, "error": printable(self.error or "")}
        return {**name, "ok": True, **self.prediction.to_dict()}


# ------------------------------------------------------------------ classifier
def _ms(seconds: float) -> float:
    return seconds * 1000.0


def _quant_mismatch(declared: dict[str, Any] | None, quant: Quant) -> str | None:
    """How a model's tensor differs from the manifest's entry for it (None: it agrees).
    The output's scale and zero point turn its integers into logits: a wrong one gives
    wrong probabilities with no error."""
    if not declared:  # a manifest may leave a tensor undescribed
        return None
    dtype = declared.get("dtype", "float32")
    if dtype != quant.dtype.name:
        return f"dtype {quant.dtype.name} but the manifest declares {dtype}"
    scale, zero = float(declared.get("scale", 0.0)), int(declared.get("zero_point", 0))
    if not math.isclose(scale, quant.scale, rel_tol=1e-6) or zero != quant.zero_point:
        return (f"quantization (scale {quant.scale:.6g}, zero point {quant.zero_point}) but "
                f"the manifest declares (scale {scale:.6g}, zero point {zero})")
    return None


class Classifier:
    """One model with its labels and preprocessing, ready to classify images.

    Args:
        model: a bundle folder (or its ``manifest.json``) or a ``.tflite``
            file; ``None`` uses :func:`default_model`.
        labels: labels file (or the labels as a list) for a bare ``.tflite``
            (default: ``labels.txt`` beside it). Not allowed with a bundle,
            which carries its labels.
        precision: ``int8`` or ``float32`` model of a bundle (default: int8 if
            the bundle has it). For a bare ``.tflite`` it must match the file.
        top_k: how many labels to return per image.
        num_threads: interpreter threads.
        xnnpack: use LiteRT's default XNNPACK delegate.
    """

    def __init__(self, model: str | Path | None = None, *,
                 labels: str | Path | list[str] | None = None,
                 precision: str | None = None, top_k: int = 3, num_threads: int = 1,
                 xnnpack: bool = True, runtime: RuntimeInfo | None = None):
        if precision is not None and precision not in PRECISIONS:
            raise ClassifyError(f"unknown precision {precision!r}; choose {', '.join(PRECISIONS)}")
        if top_k < 1:
            raise ClassifyError(f"--top-k must be at least 1, got {top_k}")
        if not 1 <= num_threads <= MAX_THREADS:
            raise ClassifyError(f"--threads must be 1 to {MAX_THREADS}, got {num_threads}")
        path = Path(model).expanduser() if model is not None else default_model()
        self.source = path
        self.bundle: Bundle | None = None
        if not path.exists():
            if model is None:
                raise ClassifyError(f"{path}: the installed bundle is missing or a broken "
                                    "link; re-deploy it or pass --model")
            raise ClassifyError(f"{path}: no such model (pass --model with a bundle folder "
                                "or a .tflite file)")
        if is_bundle(path):
            if labels is not None:
                raise ClassifyError("--labels is for a bare .tflite; a bundle has its own labels")
            self.bundle = load_bundle(path)
            self.precision = precision or ("int8" if "int8" in self.bundle.precisions
                                           else self.bundle.precisions[0])
            model_file = self.bundle.model_path(self.precision)
            self.labels = self.bundle.labels
            self.preprocessing = self.bundle.preprocessing
        else:
            model_file = path
            if path.suffix != ".tflite":
                raise ClassifyError(f"{path}: classify needs a bundle folder or a .tflite file; "
                                    "make one with: henet-edge convert MODEL --out BUNDLE")
            if labels is None:
                labels = path.with_name(LABELS_FILE)
                if not labels.is_file():
                    raise ClassifyError(f"{path}: a bare .tflite needs --labels FILE "
                                        "(one label per line)")
            self.labels = list(labels) if isinstance(labels, list) else read_labels(labels)
            self.preprocessing = DEFAULT
            self.precision = precision
        self.model: TFLiteModel = open_model(model_file, num_threads=num_threads,
                                             xnnpack=xnnpack, runtime=runtime)
        self._check_model()
        self.top_k = min(top_k, len(self.labels))

    def _check_model(self) -> None:
        m, spec = self.model, self.preprocessing
        actual = "int8" if m.quantized else "float32"
        if self.bundle is None:
            if self.precision is not None and self.precision != actual:
                raise ClassifyError(f"{m.path}: --precision {self.precision} but this file "
                                    f"is a {actual} model ({m.input_quant.dtype} input)")
            self.precision = actual
        else:
            declared = list(self.bundle.manifest.input_shape)
            if declared != list(m.input_shape):
                raise ClassifyError(f"{m.path}: wrong input shape {list(m.input_shape)}; "
                                    f"the manifest declares {declared}")
            info = self.bundle.model_info(self.precision)
            for side, quant in (("input", m.input_quant), ("output", m.output_quant)):
                problem = _quant_mismatch(info.get(side), quant)
                if problem:
                    raise ClassifyError(f"{m.path}: {side} {problem}; is this the "
                                        f"{self.precision} model the bundle was made with?")
        expected = (1, spec.input_size, spec.input_size, 3)
        if tuple(m.input_shape) != expected:
            raise ClassifyError(f"{m.path}: wrong input shape {list(m.input_shape)}; the "
                                f"preprocessing produces {list(expected)} (NHWC, batch 1)")
        if m.output_size != len(self.labels):
            raise ClassifyError(f"{m.path}: the model has {m.output_size} outputs but there "
                                f"are {len(self.labels)} labels")

    def describe(self) -> dict[str, Any]:
        """What runs: model, bundle, precision, runtime and delegate."""
        info = {"model": str(self.model.path), "precision": self.precision,
                "classes": len(self.labels), **self.model.describe()}
        if self.bundle is not None:
            info["bundle"] = str(self.bundle.root)
            info["bundle_name"] = self.bundle.manifest.name
            info["bundle_id"] = self.bundle.id
        return info

    def made_by(self) -> dict[str, str]:
        """Which model and precision made a result (added to every JSON result line).

        A bundle is named by its name and id (the sha256 of its manifest, shortened as
        ``status`` shows it), not its path: ``current`` names another bundle after a
        redeploy, and a device's folders mean nothing on the desktop.
        """
        if self.bundle is None:
            return {"model": self.model.path.name, "precision": self.precision}
        return {"model": self.bundle.manifest.name, "bundle": self.bundle.id[:12],
                "precision": self.precision}

    # -- stages ---------------------------------------------------------------
    def prepare(self, image: Image.Image) -> np.ndarray:
        """Model input (float32, ``(S, S, 3)``) for any PIL image."""
        return preprocess_image(image, self.preprocessing)

    def predict(self, x: np.ndarray, timings: dict[str, float] | None = None) -> Prediction:
        """Run one float model input through the interpreter."""
        timings = {} if timings is None else timings
        t0 = time.perf_counter()
        raw = self.model.quantize_input(x)
        t1 = time.perf_counter()
        self.model.set_input(raw)
        self.model.invoke()
        self.model.raw_output()
        t2 = time.perf_counter()
        logits = self.model.output()
        probs = softmax(logits.astype(np.float64))
        order = np.argsort(-probs, kind="stable")[: self.top_k]
        top = [(self.labels[i], float(probs[i])) for i in order]
        t3 = time.perf_counter()
        timings["preprocess"] = timings.get("preprocess", 0.0) + _ms(t1 - t0)
        timings["invoke"] = _ms(t2 - t1)
        timings["post"] = _ms(t3 - t2)
        return Prediction(top, [float(v) for v in logits], timings)

    def classify_image(self, image: Image.Image) -> Prediction:
        """Classify a decoded PIL image (any mode or size)."""
        t0 = time.perf_counter()
        x = self.prepare(image)
        return self.predict(x, {"preprocess": _ms(time.perf_counter() - t0)})

    def classify_rgb(self, frame: np.ndarray) -> Prediction:
        """Classify an RGB ``uint8`` array ``(H, W, 3)`` (a camera frame)."""
        t0 = time.perf_counter()
        x = self.prepare(Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8), "RGB"))
        return self.predict(x, {"preprocess": _ms(time.perf_counter() - t0)})

    def open_file(self, path: str | Path | BinaryIO) -> Image.Image:
        """Decode an image file (a path, or an open binary file such as an upload) the
        one way every command does: a JPEG drafted down towards the model's input."""
        source = str(path) if isinstance(path, (str, Path)) else path
        return open_image(source, draft_size=self.preprocessing.canonical_size)

    def classify_file(self, path: str | Path | BinaryIO) -> Prediction:
        """Decode and classify one image file; ``ValueError``/``OSError`` if unreadable."""
        t0 = time.perf_counter()
        image = self.open_file(path)
        decode = _ms(time.perf_counter() - t0)
        prediction = self.classify_image(image)
        prediction.timings_ms = {"decode": decode, **prediction.timings_ms}
        return prediction


# ------------------------------------------------------------------ walking
def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot read: {exc.strerror}"
    if isinstance(exc, (ValueError, OSError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def classify_paths(classifier: Classifier,
                   inputs: Iterable[str | Path]) -> Iterator[FileResult]:
    """Classify every image under ``inputs``, one result per image, errors included."""
    for path, problem in iter_inputs(inputs):
        if problem is not None:
            yield FileResult(str(path), error=problem)
            continue
        try:
            prediction = classifier.classify_file(path)
        except (KeyboardInterrupt, HenetEdgeError):
            raise
        except Exception as exc:  # one bad file must not stop the rest
            yield FileResult(str(path), error=_describe_error(exc))
            continue
        yield FileResult(str(path), prediction)


def format_result(result: FileResult) -> str:
    """One human-readable line for a result (control characters in names escaped)."""
    if result.prediction is None:
        return f"{printable(result.path)}: error: {printable(result.error or '')}"
    p = result.prediction
    labels = ", ".join(f"{label} {prob:.1%}" for label, prob in p.top)
    times = ", ".join(f"{k} {v:.2f}" for k, v in p.timings_ms.items())
    return f"{printable(result.path)}: {labels}  [ms: {times}]"

