"""``henet-edge convert`` end to end: source model + calibration + validation -> bundle."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from henet_edge.calibration.calibration_set import (
    CalibrationError,
    CalibrationSet,
    load_calibration,
    make_calibration,
    run_validation_ids,
)
from henet_edge.device.preprocess import preprocess_pixels

from .bundle_writer import (
    ConvertError,
    ConvertOptions,
    ReportImages,
    SourceModel,
    convert_bundle,
    load_source_model,
)
from .eval_data import onto_model_indices
from .output import check_output


def validation_data(src: SourceModel, val_data: str | None, fallback_pixels: np.ndarray,
                    fallback_labels: np.ndarray, limit: int | None,
                    warn: Callable[[str], None] = print):
    """(canonical pixels, labels, note) for the report card; ``warn`` hears that
    ``val_data`` is the run's own training data."""
    from henet_edge.henet_keras.data import evaluation_images, training_overlap

    if val_data and str(val_data).endswith(".npz"):  # a sample, e.g. a bundle's held-out one
        held_out = load_calibration(val_data)
        held_out.check_matches(src.preprocessing)
        pixels, note = held_out.pixels, held_out.data_note(Path(val_data).name)
        labels = _by_name(held_out.labels, held_out.provenance["class_names"], src.labels,
                          val_data)
    elif val_data:
        images, note = evaluation_images(val_data, src.preprocessing.canonical_size)
        pixels = images.images
        labels = _by_name(images.labels, images.class_names, src.labels, val_data)
        overlap = training_overlap(val_data, src.run.data_path if src.run else None,
                                   "--val-data")
        if overlap:
            warn(overlap)
            note += " (the model's training data: not held out)"
    elif src.run is not None:
        val, note = src.run.validation()
        pixels = val.images
        labels = _by_name(val.labels, val.class_names, src.labels)
    else:
        pixels, labels = fallback_pixels, fallback_labels
        note = ("the calibration images (training data: pass --val-data for an honest "
                "accuracy figure)")
    if limit is not None and len(labels) > limit:
        idx = np.random.default_rng(0).permutation(len(labels))[:limit]
        pixels, labels = pixels[np.sort(idx)], labels[np.sort(idx)]
        note += f", {limit} sampled"
    return pixels, labels, note


def convert(source: str | Path, calibration: str, out: str | Path,
            options: ConvertOptions | None = None, *,
            log: Callable[[str], None] = print) -> dict:
    """Convert a run folder or ``.keras`` file into a bundle folder ``out``.

    Steps: check ``out``, load the model, draw the calibration set, pick the
    report card's images, then convert, audit, score and write the bundle.
    """
    options = options or ConvertOptions()
    out = Path(out)
    check_output(out, options.force)  # before any slow work
    src = load_source_model(source, options.labels, options.preprocessing)
    spec = src.preprocessing
    log(f"preprocessing {spec.name} ({spec.canonical_size} -> {spec.input_size} centre crop) "
        f"from {src.preprocessing_source}")
    calib = _calibration(calibration, src, options, warn=lambda text: log(f"warning: {text}"))
    pixels, val_labels, note = validation_data(src, options.val_data, calib.pixels,
                                               calib.labels, options.report_images,
                                               warn=lambda text: log(f"warning: {text}"))
    images = ReportImages(pixels, val_labels, note, preprocess_pixels(pixels, src.preprocessing))
    return convert_bundle(src, calib, out, images, options, log=log)


def _calibration(calibration: str, src: SourceModel, options: ConvertOptions,
                 warn: Callable[[str], None] = print):
    """The calibration set, refused when its classes are not the model's. Drawn from the
    run's own data it leaves out the run's validation split (the report card's images);
    a ready ``.npz`` that holds some of them is used, and ``warn`` hears how many."""
    def held_out(source: str) -> set[str]:
        return (run_validation_ids(src.run, source) if src.run is not None else None) or set()

    if calibration.endswith(".npz"):
        calib = load_calibration(calibration)
        calib.check_matches(src.preprocessing)
        overlap = held_out(calib.provenance.get("source") or "") & set(
            calib.provenance.get("ids", ()))
        if overlap:
            warn(f"{calibration} holds {len(overlap)} of the run's validation images, on "
                 "which the report card measures int8: its ranges are fitted partly on them "
                 "(give --calibration the data itself, and convert leaves them out, or make "
                 "the set with `henet-edge calibrate --run RUN_DIR`)")
    else:
        exclude = held_out(calibration)
        try:
            calib = make_calibration(calibration, num=options.num, seed=options.seed,
                                     spec=src.preprocessing, exclude=exclude)
        except CalibrationError as exc:
            if not exclude:
                raise
            raise ConvertError(f"{exc} (once the run's {len(exclude)} validation images, "
                               "which calibration leaves out, are set aside)") from None
    names = list(calib.provenance["class_names"])
    if len(names) != len(src.labels):
        raise ConvertError(f"calibration set has {len(names)} classes, the model "
                           f"{len(src.labels)}")
    if names != src.labels and sorted(names) == sorted(src.labels):
        calib = CalibrationSet(calib.pixels, onto_model_indices(calib.labels, names,
                                                                src.labels),
                               {**calib.provenance, "class_names": list(src.labels)})
    return calib


def _by_name(labels: np.ndarray, names: list[str], model_labels: list[str],
             what: str | None = None) -> np.ndarray:
    """``labels`` (indices into ``names``) as indices into the model's labels.

    The model's classes in another order (a folder lists them sorted) are matched by
    name: by position each image would be scored and named as another class. Other
    names are taken by position (``--labels`` renaming a run's classes), or, naming
    ``what``, refused.
    """
    names = list(names)
    if names == model_labels:
        return labels
    if sorted(names) == sorted(model_labels):
        return onto_model_indices(labels, names, model_labels)
    if what is None:
        return labels
    raise ConvertError(f"{what}: classes {names} do not match the model's labels "
                       f"{model_labels}")
