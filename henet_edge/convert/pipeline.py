"""``henet-edge convert`` end to end: source model + calibration + validation -> bundle."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from henet_edge import refuse_existing
from henet_edge.calibration.calibration_set import load_calibration, resolve_calibration
from henet_edge.device.preprocess import preprocess_pixels

from .bundle_writer import ConvertError, SourceModel, convert_bundle, load_source_model
from .lowering import DEFAULT_LOWERING
from .report import DEFAULT_GATES, Gates


def validation_data(src: SourceModel, val_data: str | None, fallback_pixels: np.ndarray,
                    fallback_labels: np.ndarray, limit: int | None):
    """(canonical pixels, labels, note) for the report card."""
    from henet_edge.henet_keras.data import load_source

    if val_data and str(val_data).endswith(".npz"):  # a held-out sample, e.g. a bundle's
        held_out = load_calibration(val_data)
        held_out.check_matches(src.preprocessing)
        if held_out.provenance["class_names"] != src.labels:
            raise ConvertError(f"{val_data}: classes {held_out.provenance['class_names']} do "
                               f"not match the model's labels {src.labels}")
        pixels, labels = held_out.pixels, held_out.labels
        note = (f"{len(labels)} held-out images from {Path(val_data).name} (a sample of "
                f"{held_out.provenance['source']})")
    elif val_data:
        data = load_source(val_data, src.preprocessing.canonical_size).train
        if data.class_names != src.labels:
            raise ConvertError(f"{val_data}: classes {data.class_names} do not match the "
                               f"model's labels {src.labels}")
        pixels, labels, note = data.images, data.labels, f"all of {val_data}"
    elif src.run_config:
        from henet_edge.henet_keras.train import run_validation

        val, note = run_validation(src.run_config)
        pixels, labels = val.images, val.labels
    else:
        pixels, labels = fallback_pixels, fallback_labels
        note = ("the calibration images (training data: pass --val-data for an honest "
                "accuracy figure)")
    if limit and len(labels) > limit:
        idx = np.random.default_rng(0).permutation(len(labels))[:limit]
        pixels, labels = pixels[np.sort(idx)], labels[np.sort(idx)]
        note += f", {limit} sampled"
    return pixels, labels, note


def convert(source: str | Path, calibration: str, out: str | Path, *, num: int = 500,
            seed: int = 0, val_data: str | None = None, report_images: int | None = None,
            io: str = "int8", force: bool = False, gate: bool = True,
            gates: Gates = DEFAULT_GATES, labels: list[str] | None = None,
            include_keras: bool = False, include_calibration: bool = False,
            include_validation: int = 0, lowering: str = DEFAULT_LOWERING,
            preprocessing: str | None = None, log: Callable[[str], None] = print) -> dict:
    """Convert a run folder or ``.keras`` file into a bundle folder ``out``.

    ``preprocessing`` is ``--preprocessing`` (see ``read_preprocessing``); a bare
    ``.keras`` without a run config beside it needs it.
    """
    out = Path(out)
    refuse_existing(out, force)  # fail before any slow work
    src = load_source_model(source, labels, preprocessing)
    spec = src.preprocessing
    log(f"preprocessing {spec.name} ({spec.canonical_size} -> {spec.input_size} centre crop) "
        f"from {src.preprocessing_source}")
    calib = resolve_calibration(calibration, num=num, seed=seed, preprocessing=src.preprocessing)
    if len(calib.provenance["class_names"]) != len(src.labels):
        raise ConvertError(f"calibration set has {len(calib.provenance['class_names'])} classes, "
                           f"the model {len(src.labels)}")
    pixels, val_labels, note = validation_data(src, val_data, calib.pixels, calib.labels,
                                               report_images)
    return convert_bundle(
        src, calib, out, val_inputs=preprocess_pixels(pixels, src.preprocessing),
        val_labels=val_labels, val_pixels=pixels, data_note=note, io=io, force=force,
        gate=gate, gates=gates, include_keras=include_keras,
        include_calibration=include_calibration, include_validation=include_validation,
        lowering=lowering, log=log)
