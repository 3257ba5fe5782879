"""The labelled images ``henet-edge evaluate`` measures on, and what is known about them.

``--data`` may be a folder, an archive, a named set or a held-out ``.npz``
sample (as ``demo --val-data`` takes); without it a run folder uses its own
validation split and a bundle the ``validation.npz`` it ships. Every image
that cannot be decoded is listed, and an overlap between ``--data`` and the
images the model was trained on is said when it can be known.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from henet_edge import HenetEdgeError
from henet_edge.device.evaluate import bundle_validation
from henet_edge.device.manifest import MANIFEST, ManifestError, read_manifest
from henet_edge.device.preprocess import DEFAULT, Preprocessing
from henet_edge.henet_keras.data import training_overlap
from henet_edge.henet_keras.run import Run


class EvaluationDataError(HenetEdgeError, ValueError):
    """No data to evaluate on, or data that cannot be used."""


def onto_model_indices(labels: np.ndarray, names: list[str],
                       model_labels: list[str]) -> np.ndarray:
    """``labels`` (indices into the data's class ``names``) as indices into the model's
    labels, matched by name; every name must be one of the model's labels."""
    index = np.asarray([model_labels.index(name) for name in names])
    return index[np.asarray(labels)]


@dataclass
class EvaluationData:
    pixels: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    note: str
    skipped: list[str] = field(default_factory=list)  # "file: reason" for each bad image
    overlap: str | None = None  # why the data is not held out, when it can be known
    # what ``note`` says, for scripts: kind ("validation split", "held-out sample",
    # "calibration sample" or "images") and path, and for a split how it was drawn
    source: dict[str, str] = field(default_factory=dict)


def _training_source(model: Path, run: Run | None) -> str | None:
    """The data a run trained on (or a bundle's calibration sample came from)."""
    if run is not None:
        return run.data_path
    manifest = model / MANIFEST
    if manifest.is_file():
        try:
            calibration = read_manifest(manifest).extra.get("calibration") or {}
        except ManifestError:  # load_bundle says what is wrong with it
            return None
        return calibration.get("source") if isinstance(calibration, dict) else None
    return None


def _overlap(data: str, model: Path, run: Run | None) -> str | None:
    return training_overlap(data, _training_source(model, run))


def load_evaluation_data(model: Path, data: str | None, run: Run | None,
                         spec: Preprocessing = DEFAULT,
                         warn: Callable[[str], None] | None = None) -> EvaluationData:
    """The images to evaluate ``model`` (a run folder, model file or bundle) on, decoded
    at the canonical size of its preprocessing ``spec``. ``warn`` hears, before any
    slow decoding, that ``data`` is what the model was trained on."""
    from henet_edge.calibration.calibration_set import load_calibration

    model = Path(model)
    if data is None and run is not None:
        val, note = run.validation()
        source = {"kind": "validation split", "path": str(run.data_path),
                  "split": run.validation_kind}
        return EvaluationData(val.images, val.labels, val.class_names, note, source=source)
    if data is None:
        shipped = bundle_validation(model)
        if shipped is None:
            raise EvaluationDataError(
                "--data is required: only run folders and bundles that ship "
                "validation.npz (convert --include-validation N) know their held-out images")
        data = str(shipped)
    if data.endswith(".npz"):
        held_out = load_calibration(data)
        held_out.check_matches(spec)  # pixels stored at another canonical size: refused
        names = list(held_out.provenance.get("class_names", []))
        overlap = None if held_out.held_out else (
            f"--data {data} is not a held-out sample (a calibration set is drawn from "
            "training images), so this accuracy may not be held out (omit --data to use "
            "the held-out images)")
        kind = "held-out sample" if held_out.held_out else "calibration sample"
        return EvaluationData(held_out.pixels, held_out.labels, names,
                              held_out.data_note(Path(data).name), overlap=overlap,
                              source={"kind": kind, "path": data})
    from tqdm import tqdm

    from henet_edge.henet_keras.data import evaluation_images

    overlap = _overlap(data, model, run)
    if overlap and warn is not None:
        warn(overlap)
    with warnings.catch_warnings(), tqdm(desc=f"decoding {Path(data).name}", unit=" images",
                                         leave=False, disable=None) as bar:
        warnings.simplefilter("ignore", UserWarning)  # skipped images: listed below instead
        images, note = evaluation_images(data, spec.canonical_size, progress=bar.update)
    return EvaluationData(images.images, images.labels, images.class_names, note,
                          list(images.skipped), overlap,
                          source={"kind": "images", "path": data})
