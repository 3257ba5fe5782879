"""Accuracy of ``.tflite`` models and bundles in the device runtime (no TensorFlow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .bundle import is_bundle, load_bundle
from .metrics import classification_metrics, plot_confusion
from .preprocess import DEFAULT, Preprocessing, preprocess_pixels
from .runtime import TFLiteModel


def tflite_models(path: Path, precision: str = "all") -> tuple[dict[str, Path], list[str] | None,
                                                                 Preprocessing]:
    """The model files to evaluate, their labels and preprocessing."""
    if is_bundle(path):
        bundle = load_bundle(path)
        wanted = bundle.precisions if precision == "all" else [precision]
        return ({p: bundle.model_path(p) for p in wanted}, bundle.labels,
                bundle.preprocessing)
    labels_file = path.with_name("labels.txt")
    labels = labels_file.read_text().split("\n") if labels_file.exists() else None
    labels = [x for x in labels if x] if labels else None
    return {path.stem: path}, labels, DEFAULT


def evaluate_tflite(models: dict[str, Path], pixels: np.ndarray, labels: np.ndarray,
                    class_names: list[str], spec: Preprocessing) -> dict[str, dict]:
    inputs = preprocess_pixels(pixels, spec)
    results = {}
    for name, path in models.items():
        model = TFLiteModel(path)
        if model.output_size != len(class_names):
            raise ValueError(f"{path}: {model.output_size} outputs but {len(class_names)} "
                             "classes in the data")
        logits = np.stack([model(x) for x in inputs])
        results[name] = classification_metrics(logits, labels, class_names)
    return results


def plot_all(results: dict[str, dict], class_names: list[str], plot: Path) -> list[Path]:
    """One confusion-matrix PNG per model (the first at ``plot``); returns every path written."""
    written = []
    for i, (name, r) in enumerate(results.items()):
        target = plot if i == 0 else plot.with_name(f"{plot.stem}-{name}{plot.suffix}")
        plot_confusion(r["confusion"], class_names, target, title=f"{name}: top-1 "
                       f"{100 * r['top1']:.2f}%")
        written.append(target)
    return written
