"""``henet-edge evaluate``: Keras models in Keras, TFLite models in the device runtime."""

from __future__ import annotations

import json
from pathlib import Path

from henet_edge import HenetEdgeError
from henet_edge.device.bundle import is_bundle
from henet_edge.device.evaluate import evaluate_tflite, plot_all, tflite_models

from .eval_data import load_evaluation_data


class EvaluateError(HenetEdgeError):
    pass


def evaluate_model(path: Path, *, data: str | None = None, precision: str = "all",
                   plot: Path | None = None, preprocessing: str | None = None) -> dict:
    """Evaluate a run folder, ``.keras``, ``.tflite`` or bundle on labelled images.

    ``preprocessing`` is for a bare ``.keras`` with no run beside it (as in convert).
    """
    path = Path(path)
    if not path.exists():
        raise EvaluateError(f"{path}: no such model, run folder or bundle")
    run_config = None
    if path.is_dir() and (path / "config.json").exists():
        run_config = json.loads((path / "config.json").read_text())
    chosen = load_evaluation_data(path, data, run_config)
    pixels, labels, class_names, note = (chosen.pixels, chosen.labels, chosen.class_names,
                                         chosen.note)

    if path.suffix == ".tflite" or (run_config is None and is_bundle(path)):
        models, model_labels, spec = tflite_models(path, precision, class_names)
        if model_labels and model_labels != class_names:
            raise EvaluateError(f"model labels {model_labels} differ from the data's classes "
                                f"{class_names}")
        results = evaluate_tflite(models, pixels, labels, class_names, spec)
    else:
        results = _evaluate_keras(path, pixels, labels, class_names, preprocessing)
    out = {"model": str(path), "data": note, "models": results, "skipped": chosen.skipped}
    if chosen.overlap:
        out["overlap"] = chosen.overlap
    if run_config and (path / "history.json").exists():
        history = json.loads((path / "history.json").read_text())
        last5 = [h["val_accuracy"] for h in history[-5:]]
        out["mean_last5_val_accuracy"] = sum(last5) / len(last5)
    if plot:
        out["plots"] = [str(p) for p in plot_all(results, class_names, plot)]
    return out


def _evaluate_keras(path: Path, pixels, labels, class_names, preprocessing=None) -> dict:
    import numpy as np

    from henet_edge.convert.bundle_writer import load_source_model
    from henet_edge.device.metrics import classification_metrics
    from henet_edge.device.preprocess import preprocess_pixels

    src = load_source_model(path, labels=class_names, preprocessing=preprocessing)
    logits = np.asarray(src.model.predict(preprocess_pixels(pixels, src.preprocessing),
                                          batch_size=256, verbose=0))
    return {"keras": classification_metrics(logits, labels, class_names)}
