"""Accuracy of ``.tflite`` models and bundles in the device runtime (no TensorFlow).

Every model is loaded by :class:`~henet_edge.device.classify.Classifier`, the
loader ``classify`` uses, so a corrupt, two-output, wrong-shape or wrong-class
model is the same one-line error here as there.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .bundle import MANIFEST, is_bundle, load_bundle
from .classify import Classifier
from .manifest import LABELS_FILE, VALIDATION_FILE
from .metrics import classification_metrics, plot_confusion
from .preprocess import preprocess_pixels


def load_models(path: Path, precision: str = "all",
                labels: list[str] | None = None) -> dict[str, Classifier]:
    """The models to evaluate, loaded and checked as ``classify`` loads them.

    A ``.tflite`` a bundle's manifest lists is loaded as that bundle's model (its hash,
    labels and preprocessing); any other takes ``labels.txt`` beside it, else
    ``labels`` (the data's).
    """
    path = Path(path)
    if is_bundle(path):
        bundle = load_bundle(path)
        wanted = bundle.precisions if precision == "all" else [precision]
        return {p: Classifier(path, precision=p) for p in wanted}
    if (path.parent / MANIFEST).is_file():
        bundle = load_bundle(path.parent)
        for p in bundle.precisions:
            if bundle.model_path(p).name == path.name:
                return {p: Classifier(path.parent, precision=p)}
    beside = path.with_name(LABELS_FILE)
    return {path.stem: Classifier(path, labels=beside if beside.is_file() else labels)}


def tflite_models(path: Path, precision: str = "all", labels: list[str] | None = None,
                  ) -> tuple[dict[str, Classifier], list[str] | None]:
    """The models to evaluate (loaded and checked) and their own labels (None for a bare
    ``.tflite`` given ``labels``)."""
    models = load_models(path, precision, labels)
    first = next(iter(models.values()))
    own = None if labels is not None and first.bundle is None and first.labels == labels \
        else first.labels
    return models, own


def evaluate_tflite(models: Mapping[str, Classifier], pixels: np.ndarray,
                    labels: np.ndarray, class_names: list[str]) -> dict[str, dict]:
    """Top-1/top-5/per-class metrics of each loaded model on canonical ``pixels``, each
    preprocessed as that model reads images."""
    results = {}
    for name, model in models.items():
        inputs = preprocess_pixels(pixels, model.preprocessing)
        logits = np.stack([model.model(x) for x in inputs])
        results[name] = classification_metrics(logits, labels, class_names)
    return results


def bundle_validation(path: Path) -> Path | None:
    """The bundle's shipped held-out sample, verified with the bundle, if it has one."""
    path = Path(path)
    if not is_bundle(path) or (path.is_dir() and not (path / MANIFEST).is_file()):
        return None
    bundle = load_bundle(path)
    return bundle.root / VALIDATION_FILE if VALIDATION_FILE in bundle.manifest.files else None


def plot_all(results: dict[str, dict], class_names: list[str], plot: Path) -> list[Path]:
    """One confusion-matrix PNG per model (the first at ``plot``); returns every path written."""
    written: list[Path] = []
    for name, r in results.items():
        target = written[0].with_name(f"{written[0].stem}-{name}.png") if written else plot
        written.append(plot_confusion(r["confusion"], class_names, target,
                                      title=f"{name}: top-1 {100 * r['top1']:.2f}%"))
    return written
