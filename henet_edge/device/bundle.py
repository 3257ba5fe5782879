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
import os
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


def _inside(root: Path, name: str) -> bool:
    """Whether ``name`` is a relative path that stays inside ``root`` once resolved."""
    if not name or Path(name).is_absolute() or ".." in Path(name).parts:
        return False
    real_root = Path(os.path.realpath(root))
    real = Path(os.path.realpath(root / name))
    return real != real_root and real_root in real.parents


def verify_files(root: Path, manifest: dict[str, Any]) -> list[str]:
    """Problems with the files listed in the manifest (escaping, missing or hash mismatch).

    A name escapes the bundle if it is absolute, uses ``..``, or resolves (through a
    symlink) to a path outside the bundle folder.
    """
    problems = []
    for name, expected in sorted(manifest.get("files", {}).items()):
        path = root / name
        if not _inside(root, name):
            problems.append(f"{name}: path escapes the bundle")
        elif not path.is_file():
            problems.append(f"{name}: missing")
        else:
            try:
                actual = sha256_file(path)
            except PermissionError:
                problems.append(f"{name}: permission denied")
                continue
            if actual != expected:
                problems.append(f"{name}: sha256 mismatch (file changed or corrupt)")
    return problems


def named_files(manifest: dict[str, Any]) -> list[tuple[str, str]]:
    """Every file the manifest names for use, as (field, relative path)."""
    named = [(f"models.{p}.file", info["file"]) for p, info in manifest["models"].items()]
    if manifest.get("golden"):
        named.append(("golden", manifest["golden"]))
    return named


def check_structure(manifest: Any) -> None:
    """Raise ``ValueError`` naming the field when the manifest's structure is wrong."""
    if not isinstance(manifest, dict):
        raise ValueError(f"the manifest is a JSON {type(manifest).__name__}, not an object")
    for key in ("labels", "input_shape", "preprocessing", "models", "files"):
        if key not in manifest:
            raise ValueError(f"missing {key!r}")
    labels = manifest["labels"]
    if not isinstance(labels, list) or not labels or not all(
            isinstance(x, str) and x for x in labels):
        raise ValueError("'labels' must be a non-empty list of non-empty strings")
    shape = manifest["input_shape"]
    if not isinstance(shape, list) or len(shape) != 4 or not all(
            type(x) is int and x > 0 for x in shape):
        raise ValueError("'input_shape' must be a list of four positive integers")
    if not isinstance(manifest["preprocessing"], dict):
        raise ValueError("'preprocessing' must be an object")
    files = manifest["files"]
    if not isinstance(files, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise ValueError("'files' must be an object mapping file names to sha256 strings")
    models = manifest["models"]
    if not isinstance(models, dict) or not models:
        raise ValueError("'models' must be a non-empty object")
    for precision, info in models.items():
        if precision not in PRECISIONS:
            raise ValueError(f"'models.{precision}': unknown precision "
                             f"(expected one of {', '.join(PRECISIONS)})")
        if not isinstance(info, dict) or not isinstance(info.get("file"), str):
            raise ValueError(f"'models.{precision}' must be an object with a 'file' string")
    golden = manifest.get("golden")
    if golden is not None and not isinstance(golden, str):
        raise ValueError("'golden' must be a string")


def check_named_files(root: Path, manifest: dict[str, Any]) -> list[str]:
    """Problems with files the manifest uses: each must be inside the bundle and hashed."""
    problems = []
    for field, name in named_files(manifest):
        if not _inside(root, name):
            problems.append(f"{field}: {name!r} is not a path inside the bundle")
        elif name not in manifest["files"]:
            problems.append(f"{field}: {name!r} is not listed in 'files' (not hashed)")
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
    except PermissionError as exc:
        raise BundleError(f"{manifest_path}: cannot be read (permission denied)") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{manifest_path}: not valid JSON ({exc})") from exc
    except RecursionError as exc:
        raise BundleError(f"{manifest_path}: not valid JSON (nested too deeply)") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise BundleError(f"{manifest_path}: unknown format {found!r} (expected {FORMAT})")
    try:
        check_structure(manifest)
    except ValueError as exc:
        raise BundleError(f"{manifest_path}: {exc}") from exc
    problems = check_named_files(root, manifest)
    if problems:
        raise BundleError(f"{manifest_path}: " + "; ".join(problems))
    if verify:
        problems = verify_files(root, manifest)
        if problems:
            raise BundleError(f"{root}: bundle fails its manifest hashes: " + "; ".join(problems))
    return Bundle(root, manifest)
