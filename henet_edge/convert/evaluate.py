"""``henet-edge evaluate``: Keras models in Keras, TFLite models in the device runtime."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from henet_edge import HenetEdgeError
from henet_edge.device.bundle import MANIFEST, is_bundle, load_bundle
from henet_edge.device.evaluate import evaluate_tflite, plot_all, tflite_models
from henet_edge.device.preprocess import DEFAULT, Preprocessing
from henet_edge.henet_keras.run import Run
from henet_edge.plots import check_plot_target

from .eval_data import load_evaluation_data, onto_model_indices


class EvaluateError(HenetEdgeError):
    pass


def evaluate_model(path: Path, *, data: str | None = None, precision: str = "all",
                   plot: Path | None = None, preprocessing: str | None = None,
                   warn: Callable[[str], None] | None = None) -> dict:
    """Evaluate a run folder, ``.keras``, ``.tflite`` or bundle on labelled images.

    ``preprocessing`` is for a bare ``.keras`` with no run beside it (as in convert);
    ``warn`` hears at once when ``data`` is the model's training data (see the result's
    ``overlap``).
    """
    path = Path(path)
    if not path.exists():
        raise EvaluateError(f"{path}: no such model, run folder or bundle")
    if not (path.is_dir() or path.suffix in (".keras", ".tflite") or path.name == MANIFEST):
        raise EvaluateError(f"{path}: not a model: give a .keras or .tflite file, a run "
                            "folder or a bundle")
    if plot is not None:  # before the slow work: a plot that cannot land wastes it
        check_plot_target(plot, "confusion.png")
    run = Run.load(path) if Run.is_run(path) else None
    chosen = load_evaluation_data(path, data, run, _preprocessing_of(path, run, preprocessing),
                                  warn)
    pixels, labels, class_names, note = (chosen.pixels, chosen.labels, chosen.class_names,
                                         chosen.note)

    if path.suffix == ".tflite" or (run is None and is_bundle(path)):
        models, model_labels = tflite_models(path, precision, class_names)
        if model_labels and model_labels != class_names:
            labels, class_names, note = _onto_model_classes(labels, class_names, model_labels,
                                                            note)
        for loaded in models.values():
            _check_classes(loaded.model.path, loaded.model.output_size, class_names, note)
        results = evaluate_tflite(models, pixels, labels, class_names)
    else:
        results, class_names, note = _evaluate_keras(path, pixels, labels, class_names, note,
                                                     preprocessing)
    out = {"model": str(path), "data": note, "data_source": chosen.source, "models": results,
           "skipped": chosen.skipped}
    if chosen.overlap:
        out["overlap"] = chosen.overlap
    if run is not None and run.history:
        out["mean_last5_val_accuracy"] = run.mean_last5()
    if plot:
        out["plots"] = [str(p) for p in plot_all(results, class_names, plot)]
    return out


def _preprocessing_of(path: Path, run: Run | None, preprocessing: str | None) -> Preprocessing:
    """How the model reads images (as ``convert`` would take it for a Keras model, or
    its bundle's), so the data is decoded at its canonical size; the default for a
    bare model."""
    from henet_edge.convert.bundle_writer import keras_preprocessing

    if run is not None or path.suffix == ".keras":
        found = keras_preprocessing(run.model_path() if run else path,
                                    run.config if run else None, preprocessing)
        return found[0] if found else DEFAULT
    if is_bundle(path) or (path.suffix == ".tflite" and (path.parent / MANIFEST).is_file()):
        return load_bundle(path if is_bundle(path) else path.parent).preprocessing
    return DEFAULT


def _onto_model_classes(labels, class_names: list[str], model_labels: list[str], note: str):
    """Data of some of the model's classes (folders named by label), labelled by the
    model's indices: each class is matched by name, absent ones have no accuracy."""
    if not set(class_names) <= set(model_labels):
        raise EvaluateError(f"model labels {model_labels} differ from the data's classes "
                            f"{class_names}; pass --data with (some of) the model's classes")
    return (onto_model_indices(labels, class_names, model_labels), list(model_labels),
            f"{note} ({len(class_names)} of the model's {len(model_labels)} classes)")


def _check_classes(path: Path, outputs: int, class_names: list[str], note: str) -> None:
    if outputs != len(class_names):
        shown = ", ".join(class_names[:5]) + (", ..." if len(class_names) > 5 else "")
        raise EvaluateError(f"{path}: the model has {outputs} classes but the data ({note}) "
                            f"has {len(class_names)} ({shown}); pass --data with images of "
                            "the model's classes")


def _evaluate_keras(path: Path, pixels, labels, class_names, note: str,
                    preprocessing: str | None = None) -> tuple[dict, list[str], str]:
    """The Keras model's metrics, and the classes and note they are reported under (the
    model's own, where the data holds some of its classes by name, as for bundles)."""
    import numpy as np

    from henet_edge.convert.bundle_writer import load_source_model
    from henet_edge.device.metrics import classification_metrics
    from henet_edge.device.preprocess import preprocess_pixels

    src = load_source_model(path, preprocessing=preprocessing)
    if src.labels != class_names and set(class_names) <= set(src.labels):  # by name
        labels, class_names, note = _onto_model_classes(labels, class_names, src.labels, note)
    _check_classes(src.path, int(src.model.outputs[0].shape[-1]), class_names, note)
    logits = np.asarray(src.model.predict(preprocess_pixels(pixels, src.preprocessing),
                                          batch_size=256, verbose=0))
    return {"keras": classification_metrics(logits, labels, class_names)}, class_names, note


def format_evaluation(results: dict) -> str:
    """What ``henet-edge evaluate`` prints: accuracy, weakest classes, the run's statistic."""
    lines = []
    for name, r in results["models"].items():
        lines.append(f"{name}: top-1 {100 * r['top1']:.2f}%  top-5 {100 * r['top5']:.2f}%  "
                     f"on {r['images']} images ({results['data']})")
        scored = [(k, v) for k, v in r["per_class"].items() if v is not None]  # None: no image
        worst = sorted(scored, key=lambda kv: kv[1])[:3]
        lines.append("  weakest classes: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in worst))
    if "mean_last5_val_accuracy" in results:
        lines.append(f"run history: mean of the last 5 validation evaluations "
                     f"{100 * results['mean_last5_val_accuracy']:.2f}% (the paper's statistic)")
    lines += [f"confusion matrix: {written}" for written in results.get("plots", [])]
    return "\n".join(lines)
