"""A class-stratified, deterministic sample of training images with its provenance.

Stored as ``.npz``: ``pixels`` (canonical uint8 images, before the final crop
and normalisation), ``labels``, and ``provenance`` (JSON: source, seed, image
ids, class histogram, preprocessing, sha256 of the pixels). Model inputs are
derived with the shared :func:`~henet_edge.device.preprocess.preprocess_pixels`.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from henet_edge import HenetEdgeError, UsageError
from henet_edge.device.manifest import ManifestError, check_preprocessing
from henet_edge.device.preprocess import DEFAULT, Preprocessing, preprocess_pixels
from henet_edge.storage import check_output_file, replacing

DEFAULT_NUM = 500  # calibration images: enough for the ranges, quick to convert


class CalibrationError(HenetEdgeError, ValueError):
    """A calibration set that cannot be made or used."""


def held_out_ids(count: int) -> list[str]:
    """The ids of a sample of a run's validation split: ``validation[0]``, ..."""
    return [f"validation[{i}]" for i in range(count)]


@dataclass
class CalibrationSet:
    pixels: np.ndarray
    labels: np.ndarray
    provenance: dict

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing.from_dict(self.provenance["preprocessing"])

    def inputs(self) -> np.ndarray:
        """Normalised float32 model inputs, ``(N, S, S, 3)``."""
        return preprocess_pixels(self.pixels, self.preprocessing)

    def check_matches(self, spec: Preprocessing) -> None:
        """Refuse a set whose preprocessing differs from the model's."""
        mine = self.preprocessing.to_dict()
        theirs = spec.to_dict()
        diff = [k for k in theirs if mine.get(k) != theirs[k]]
        if diff:
            raise CalibrationError(
                "calibration set was preprocessed differently from the model ("
                + ", ".join(f"{k}: {mine.get(k)} vs {theirs[k]}" for k in diff)
                + "); make a new one with `henet-edge calibrate`")

    @property
    def held_out(self) -> bool:
        """Drawn from a run's validation split (``convert --include-validation``); any
        other sample (``calibrate`` draws from the training data) may hold training images."""
        ids = self.provenance.get("ids") or []
        return bool(ids) and all(str(i).startswith("validation[") for i in ids)

    def data_note(self, name: str) -> str:
        """What an accuracy measured on this sample was measured on."""
        kind = "held-out images" if self.held_out else "images (not a held-out sample)"
        return (f"{len(self.labels)} {kind} from {name} (a sample of "
                f"{self.provenance.get('source', '?')})")

    def summary(self) -> dict[str, Any]:
        """The provenance without the per-image ids (what ``calibrate --json`` prints)."""
        return {k: v for k, v in self.provenance.items() if k != "ids"}

    def describe(self, out: Path) -> str:
        """Two lines for ``calibrate``: where it came from, its hash, its classes."""
        p = self.provenance
        left_out = (f", {p['excluded']} validation images left out" if p.get("excluded")
                    else "")
        return (f"{out}: {len(self.pixels)} images from {p.get('source')} (seed "
                f"{p.get('seed')}{left_out}), sha256 {p['sha256'][:16]}...\nper class: "
                + ", ".join(f"{k} {v}" for k, v in p["histogram"].items()))

    def save(self, path: Path) -> None:
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with replacing(path, ".npz") as tmp:
                np.savez_compressed(tmp, pixels=self.pixels, labels=self.labels,
                                    provenance=np.array(json.dumps(self.provenance)))
        except OSError as exc:  # a full disk, a folder that went away
            raise CalibrationError(f"{path}: cannot be written ({exc.strerror or exc})") from None


def _digest(pixels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()


def make_calibration(source: str, num: int = DEFAULT_NUM, seed: int = 0,
                     spec: Preprocessing = DEFAULT, *,
                     exclude: Collection[str] = ()) -> CalibrationSet:
    """Sample ``num`` images, as evenly across classes as the data allows, never one whose
    id is in ``exclude`` (a run's validation split: its accuracy is measured there)."""
    from henet_edge.henet_keras.data import load_source

    data = load_source(source, spec.canonical_size).train
    excluded = set(exclude)
    keep = np.asarray([i not in excluded for i in data.ids], bool)
    calib = sample(data.images[keep], data.labels[keep], data.class_names,
                   [i for i in data.ids if i not in excluded], num=num, seed=seed, spec=spec,
                   source=source)
    if exclude:
        calib.provenance["excluded"] = int((~keep).sum())
    return calib


def run_validation_ids(run: Any, source: str) -> set[str] | None:
    """The ids of ``run``'s validation images (a :class:`~henet_edge.henet_keras.run.Run`)
    that ``source`` holds: None when ``source`` is not the data ``run`` trained on, and
    none for a named set (its test split is never among its training images)."""
    from henet_edge.henet_keras.data import NAMED_SETS, same_source

    if not same_source(source, run.data_path):
        return None
    return set() if source in NAMED_SETS else set(run.validation()[0].ids)


def write_calibration(source: str, out: str | Path, *, num: int = DEFAULT_NUM, seed: int = 0,
                      force: bool = False, run: str | Path | None = None) -> CalibrationSet:
    """``henet-edge calibrate``: sample ``source`` and save the set as ``out`` (``.npz``);
    an existing ``out`` is replaced only with ``force``, and checked before sampling.
    With ``run`` (the run folder the set will convert), the run's validation split is
    left out: its accuracy is measured there."""
    out = Path(out)
    if out.suffix != ".npz":
        raise UsageError(f"--out must end in .npz, got {out}")
    check_output_file(out, force)
    exclude: set[str] = set()
    if run is not None:
        from henet_edge.henet_keras.run import Run

        trained = Run.load(run)
        ids = run_validation_ids(trained, source)
        if ids is None:
            raise UsageError(f"--run {run} trained on {trained.data_path}, not on --data "
                             f"{source}: there is no validation split of it to leave out")
        exclude = ids
    calib = make_calibration(source, num=num, seed=seed, exclude=exclude)
    calib.save(out)
    return calib


def sample(images: np.ndarray, labels: np.ndarray, class_names: list[str], ids: list[str], *,
           num: int, seed: int, spec: Preprocessing, source: str,
           option: str = "--num", all_if_fewer: bool = False) -> CalibrationSet:
    """A seeded sample of ``num`` images, the classes as equal as ``num`` allows (with
    ``all_if_fewer``, all the images when there are no more than ``num``). Errors name
    ``option``."""
    classes = len(class_names)
    if num < classes:
        raise CalibrationError(f"{option} {num} cannot cover all {classes} classes; "
                               f"use at least {classes}"
                               + (f" ({DEFAULT_NUM} is typical)" if option == "--num" else ""))
    rng = np.random.default_rng(seed)
    if all_if_fewer and num >= len(labels):  # everything, whatever the classes' sizes
        per_class = [int((labels == c).sum()) for c in range(classes)]
    else:
        per_class = [num // classes + (1 if c < num % classes else 0) for c in range(classes)]
    chosen = []
    for c, want in enumerate(per_class):
        idx = np.flatnonzero(labels == c)
        if len(idx) < want:
            raise CalibrationError(f"{option} {num}: class {class_names[c]!r} has "
                                   f"{len(idx)} images, fewer than the {want} a stratified "
                                   f"sample of {num} needs")
        chosen.extend(np.sort(rng.choice(idx, size=want, replace=False)).tolist())
    chosen = np.asarray(chosen)
    pixels = images[chosen]
    sel_labels = labels[chosen].astype(np.int32)
    provenance = {
        "source": str(source), "seed": seed, "num": len(chosen),  # as drawn, not as asked
        "class_names": list(class_names),
        "histogram": {class_names[c]: int((sel_labels == c).sum()) for c in range(classes)},
        "ids": [ids[i] for i in chosen],
        "preprocessing": spec.to_dict(),
        "sha256": _digest(pixels),
    }
    return CalibrationSet(pixels, sel_labels, provenance)


_PROVENANCE_KEYS = ("source", "class_names", "preprocessing", "sha256")


def load_calibration(path: str | Path) -> CalibrationSet:
    """Load a ``.npz`` calibration set, checking its recorded hash."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            pixels, labels = z["pixels"], z["labels"]
            provenance = json.loads(str(z["provenance"]))
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        reason = str(exc) or type(exc).__name__  # a truncated file: EOFError, BadZipFile
        raise CalibrationError(f"{path}: not a henet-edge calibration set ({reason})") from None
    missing = [k for k in _PROVENANCE_KEYS if not isinstance(provenance, dict) or k not in
               provenance]
    if missing:
        raise CalibrationError(f"{path}: not a henet-edge calibration set (its provenance "
                               f"lacks {', '.join(missing)})")
    if _digest(pixels) != provenance.get("sha256"):
        raise CalibrationError(f"{path}: pixels do not match the recorded sha256")
    problem = _content_problem(pixels, labels, provenance)
    if problem:
        raise CalibrationError(f"{path}: not a usable calibration set ({problem})")
    return CalibrationSet(pixels, labels, provenance)


def _content_problem(pixels: np.ndarray, labels: np.ndarray, provenance: dict) -> str | None:
    """What a hand-made or foreign ``.npz`` gets wrong that the hash cannot catch."""
    try:
        spec = check_preprocessing(provenance["preprocessing"])
    except ManifestError as exc:
        return str(exc)
    size = spec["canonical_size"]
    if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[1:] != (size, size, 3):
        return (f"pixels are {pixels.dtype} {list(pixels.shape)}, not uint8 [N, {size}, "
                f"{size}, 3] as its preprocessing's canonical size says")
    classes = provenance["class_names"]
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        return "'class_names' must be a list of names"
    if len(pixels) == 0:
        return "it holds no images"
    if (labels.shape != (len(pixels),) or labels.dtype.kind not in "iu"
            or labels.min() < 0 or labels.max() >= len(classes)):
        return (f"labels must be {len(pixels)} class indices from 0 to {len(classes) - 1}, "
                f"got {labels.dtype} {list(labels.shape)}")
    return None


def resolve_calibration(spec_or_path: str, *, num: int, seed: int,
                        preprocessing: Preprocessing) -> CalibrationSet:
    """An ``.npz`` calibration set, or a fresh sample of a data source."""
    if str(spec_or_path).endswith(".npz"):
        calib = load_calibration(spec_or_path)
    else:
        calib = make_calibration(spec_or_path, num=num, seed=seed, spec=preprocessing)
    calib.check_matches(preprocessing)
    return calib
