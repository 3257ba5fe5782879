"""Bundles: the folder a conversion writes and a device runs.

A bundle is a folder with ``manifest.json``, the contract between desktop and
device::

    {
      "format": "henet-edge-bundle/1",
      "name": "henet_r3",                       # model name
      "created": "2026-11-25T18:00:00Z",
      "model": {"family": "henet", "repeat": 3, "classes": 10,
                "params": 85378, "macs": 10046040},
      "labels": ["airplane", ...],              # also in labels.txt, one per line
      "input_shape": [1, 31, 31, 3],            # NHWC, static batch of 1
      "preprocessing": {...},                   # Preprocessing.to_dict()
      "models": {                               # one entry per precision
        "float32": {"file": "model_float32.tflite",
                    "input":  {"dtype": "float32", "scale": 0.0, "zero_point": 0},
                    "output": {"dtype": "float32", "scale": 0.0, "zero_point": 0}},
        "int8":    {"file": "model_int8.tflite",
                    "input":  {"dtype": "int8", "scale": 0.0186, "zero_point": -14},
                    "output": {"dtype": "int8", "scale": 0.1, "zero_point": 3}}
      },
      "golden": "golden.json",                  # golden images and desktop results
      "calibration": {...},                     # provenance of the calibration set
      "source_model": {"file": "model.keras", "sha256": "..."},
      "versions": {...},
      "files": {"model_float32.tflite": "<sha256>", ...}   # every other file
    }

The bundle's identity (its version) is the sha256 of ``manifest.json``, which
covers every file through ``files``. The type, its reader, writer and the one
verifier of a bundle's files are in :mod:`henet_edge.device.manifest`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from henet_edge import HenetEdgeError

from .manifest import (
    FORMAT,
    MANIFEST,
    PRECISIONS,
    Manifest,
    ManifestError,
    content_problems,
    named_file_problems,
    read_golden,
    read_manifest_and_id,
    sha256_file,
    verify_files,
)
from .preprocess import Preprocessing

__all__ = ["FORMAT", "MANIFEST", "PRECISIONS", "Bundle", "BundleError", "Manifest",
           "is_bundle", "load_bundle", "sha256_file", "verify_files"]


class BundleError(HenetEdgeError, ValueError):
    """A bundle that cannot be used (missing, malformed, or failing its hashes)."""


def is_bundle(path: str | Path) -> bool:
    """Whether a model argument is taken as a bundle rather than a bare ``.tflite``: a
    folder (:func:`load_bundle` says if it has no manifest) or a ``manifest.json``."""
    path = Path(path)
    return path.name == MANIFEST or path.is_dir()


@dataclass
class Bundle:
    """A loaded bundle folder whose files all passed their hashes and the schema."""

    root: Path  # the folder itself: a ``current`` link is followed once, at load
    manifest: Manifest
    id: str  # the sha256 of the manifest that was read and checked
    _golden: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def labels(self) -> list[str]:
        return list(self.manifest.labels)

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing.from_dict(self.manifest.preprocessing)

    @property
    def precisions(self) -> list[str]:
        return self.manifest.precisions

    def model_path(self, precision: str) -> Path:
        models = self.manifest.models
        if precision not in models:
            raise BundleError(f"{self.root}: no {precision} model in this bundle "
                              f"(has: {', '.join(models)})")
        return self.root / models[precision].file

    def model_info(self, precision: str) -> dict[str, Any]:
        self.model_path(precision)
        return self.manifest.models[precision].to_dict()

    def file(self, name: str) -> Path:
        """A listed (so verified) file of the bundle; :class:`BundleError` for any other."""
        if name not in self.manifest.files:
            raise BundleError(f"{self.root}: {name!r} is not listed in the manifest's 'files'")
        return self.root / name

    def golden(self) -> dict[str, Any] | None:
        """``golden.json``, checked at load: every image a listed file inside the bundle."""
        return self._golden


def _readable(path: Path, what: str) -> None:
    """Raise :class:`BundleError` naming ``path`` when it cannot be read."""
    try:
        if path.is_dir():
            os.listdir(path)
        elif path.exists():
            with open(path, "rb"):
                pass
        else:
            raise BundleError(f"{path}: no such {what}")
    except PermissionError as exc:
        raise BundleError(f"{path}: cannot be read (permission denied)") from exc


def load_bundle(path: str | Path) -> Bundle:
    """Load a bundle folder (or its manifest.json), checking its schema and every hash."""
    root = Path(path).expanduser()
    if root.name == MANIFEST:
        root = root.parent
    # Every read below, and every later one (models opened by a pool, golden images),
    # goes to one folder: a deploy that repoints ``current`` meanwhile changes nothing
    # for a bundle already loaded, and its results keep naming the model that made them.
    root = root.resolve()
    manifest_path = root / MANIFEST
    _readable(root, "bundle folder")
    try:
        found = manifest_path.is_file()
    except PermissionError as exc:
        raise BundleError(f"{root}: cannot be read (permission denied)") from exc
    if not found:
        raise BundleError(f"{root}: not a bundle (no {MANIFEST})")
    try:
        manifest, bundle_id = read_manifest_and_id(manifest_path)
    except ManifestError as exc:
        raise BundleError(f"{manifest_path}: {exc}") from exc
    problems = named_file_problems(root, manifest)
    if problems:
        raise BundleError(f"{manifest_path}: " + "; ".join(problems))
    problems = verify_files(root, manifest.files)
    if problems:
        raise BundleError(f"{root}: bundle fails its manifest hashes: " + "; ".join(problems))
    problems = content_problems(root, manifest)
    if problems:
        raise BundleError(f"{root}: " + "; ".join(problems))
    return Bundle(root, manifest, bundle_id, read_golden(root, manifest))
