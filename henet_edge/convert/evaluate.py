"""``henet-edge evaluate``: Keras models in Keras, TFLite models in the device runtime."""

from __future__ import annotations

from pathlib import Path

from henet_edge import HenetEdgeError
from henet_edge.device.bundle import MANIFEST
from henet_edge.device.evaluate import evaluate_tflite, plot_all, tflite_models
from henet_edge.henet_keras.run import Run


class EvaluateError(HenetEdgeError):
    pass


def _is_tflite(path: Path) -> bool:
    return path.suffix == ".tflite" or (path / MANIFEST).exists() or path.name == MANIFEST


def evaluate_model(path: Path, *, data: str | None = None, precision: str = "all",
                   plot: Path | None = None) -> dict:
    """Evaluate a run folder, ``.keras``, ``.tflite`` or bundle on labelled images."""
    from henet_edge.henet_keras.data import load_source

    path = Path(path)
    if not path.exists():
        raise EvaluateError(f"{path}: no such model, run folder or bundle")
    run = Run.load(path) if Run.is_run(path) else None
    if data is None and run is None:
        raise EvaluateError("--data is required (only run folders know their validation data)")

    if data is not None:
        images = load_source(data).train
        pixels, labels, class_names, note = (images.images, images.labels,
                                             images.class_names, str(data))
    else:
        val, note = run.validation()
        pixels, labels, class_names = val.images, val.labels, val.class_names

    if _is_tflite(path):
        models, model_labels, spec = tflite_models(path, precision)
        if model_labels and model_labels != class_names:
            raise EvaluateError(f"model labels {model_labels} differ from the data's classes "
                                f"{class_names}")
        results = evaluate_tflite(models, pixels, labels, class_names, spec)
    else:
        results = _evaluate_keras(path, pixels, labels, class_names)
    out = {"model": str(path), "data": note, "models": results}
    if run is not None and run.history:
        out["mean_last5_val_accuracy"] = run.mean_last5()
    if plot:
        out["plots"] = [str(p) for p in plot_all(results, class_names, plot)]
    return out


def _evaluate_keras(path: Path, pixels, labels, class_names) -> dict:
    import numpy as np

    from henet_edge.convert.bundle_writer import load_source_model
    from henet_edge.device.metrics import classification_metrics
    from henet_edge.device.preprocess import preprocess_pixels

    src = load_source_model(path, labels=class_names)
    logits = np.asarray(src.model.predict(preprocess_pixels(pixels, src.preprocessing),
                                          batch_size=256, verbose=0))
    return {"keras": classification_metrics(logits, labels, class_names)}
