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
covers every file through ``files``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from henet_edge import HenetEdgeError

from .preprocess import Preprocessing

FORMAT = "henet-edge-bundle/1"
MANIFEST = "manifest.json"
PRECISIONS = ("int8", "float32")


class BundleError(HenetEdgeError, ValueError):
    """A bundle that cannot be used (missing, malformed, or failing its hashes)."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Bundle:
    """A loaded, verified bundle folder."""

    root: Path
    manifest: dict[str, Any]

    @property
    def id(self) -> str:
        return sha256_file(self.root / MANIFEST)

    @property
    def labels(self) -> list[str]:
        return list(self.manifest["labels"])

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing.from_dict(self.manifest["preprocessing"])

    @property
    def precisions(self) -> list[str]:
        return [p for p in PRECISIONS if p in self.manifest["models"]]

    def model_path(self, precision: str) -> Path:
        models = self.manifest["models"]
        if precision not in models:
            raise BundleError(f"{self.root}: no {precision} model in this bundle "
                              f"(has: {', '.join(models)})")
        return self.root / models[precision]["file"]

    def model_info(self, precision: str) -> dict[str, Any]:
        self.model_path(precision)
        return self.manifest["models"][precision]

    def golden(self) -> dict[str, Any] | None:
        name = self.manifest.get("golden")
        if not name:
            return None
        return json.loads((self.root / name).read_text())


def verify_files(root: Path, manifest: dict[str, Any]) -> list[str]:
    """Problems with the files listed in the manifest (missing or hash mismatch)."""
    problems = []
    for name, expected in sorted(manifest.get("files", {}).items()):
        path = root / name
        if ".." in Path(name).parts or Path(name).is_absolute():
            problems.append(f"{name}: path escapes the bundle")
        elif not path.is_file():
            problems.append(f"{name}: missing")
        elif sha256_file(path) != expected:
            problems.append(f"{name}: sha256 mismatch (file changed or corrupt)")
    return problems


def load_bundle(path: str | Path, *, verify: bool = True) -> Bundle:
    """Load a bundle folder (or its manifest.json), checking every file's hash."""
    root = Path(path).expanduser()
    if root.name == MANIFEST:
        root = root.parent
    manifest_path = root / MANIFEST
    if not root.exists():
        raise BundleError(f"{root}: no such bundle folder")
    if not manifest_path.is_file():
        raise BundleError(f"{root}: not a bundle (no {MANIFEST})")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{manifest_path}: not valid JSON ({exc})") from exc
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{manifest_path}: unknown format {manifest.get('format')!r} "
                          f"(expected {FORMAT})")
    for key in ("labels", "input_shape", "preprocessing", "models", "files"):
        if key not in manifest:
            raise BundleError(f"{manifest_path}: missing {key!r}")
    if verify:
        problems = verify_files(root, manifest)
        if problems:
            raise BundleError(f"{root}: bundle fails its manifest hashes: " + "; ".join(problems))
    return Bundle(root, manifest)
