"""The bundle manifest: one type, one writer, one reader and one verifier of its files.

``manifest.json`` is the contract between desktop and device (its fields are
described in :mod:`henet_edge.device.bundle`). :func:`parse_manifest` checks the
whole manifest once, against one schema, and names the field that is wrong;
:meth:`Manifest.to_json` is the only writer; :func:`verify_bundle` is the only
check of a bundle's files. Its one rule for paths: a file the manifest lists or
names must be a relative path that stays inside the bundle once resolved, so a
symlink to a file outside is refused like ``../x`` or ``/etc/passwd``.

Standard library only, on purpose: ``deploy/agent.py`` runs this same source
under the device's own ``python3`` before henet-edge is installed there (deploy
ships it inside the agent's program), and the device side uses it as a module.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMAT = "henet-edge-bundle/1"
# The files of a bundle folder, as convert writes them (the manifest lists each).
MANIFEST = "manifest.json"
LABELS_FILE = "labels.txt"
GOLDEN_FILE = "golden.json"  # golden images' desktop results (the images in golden/)
REPORT_JSON, REPORT_MD = "report.json", "report.md"  # convert's report card
CALIBRATION_FILE = "calibration.npz"  # convert --include-calibration
VALIDATION_FILE = "validation.npz"  # convert --include-validation: held-out images
SOURCE_MODEL = "source/model.keras"  # convert --include-keras
PRECISIONS = ("int8", "float32")
TENSOR_DTYPES = ("float32", "int8", "uint8", "int16")
MAX_MANIFEST_BYTES = 16 << 20
MAX_CANONICAL_SIZE = 4096
SHA256 = re.compile(r"[0-9a-f]{64}")
# Written in this order (the order of every bundle written so far); unknown keys
# of a newer writer are kept, before ``files``.
ORDER = ("format", "name", "created", "model", "labels", "input_shape", "preprocessing",
         "models", "lowering", "golden", "golden_count", "calibration", "report",
         "source_model", "versions")


def model_file(precision: str) -> str:
    """``model_int8.tflite``: the bundle's model file of ``precision``."""
    return f"model_{precision}.tflite"


class ManifestError(ValueError):
    """A manifest or bundle that breaks the schema; the message names the field."""


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def is_inside(root: str | os.PathLike, name: str) -> bool:
    """Whether ``name`` is a relative path that stays inside ``root`` once resolved."""
    if not name or os.path.isabs(name) or ".." in Path(name).parts:
        return False
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(root, name))
    return real != real_root and real.startswith(real_root + os.sep)


def _cannot_read(exc: OSError) -> str:
    reason = "permission denied" if isinstance(exc, PermissionError) else (
        exc.strerror or type(exc).__name__).lower()
    return f"cannot be read ({reason})"


# ------------------------------------------------------------------ the type
@dataclass(frozen=True)
class ModelEntry:
    """One precision's model file and its input/output quantization."""

    file: str
    input: dict[str, Any] = field(default_factory=dict)
    output: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "input": dict(self.input), "output": dict(self.output)}


@dataclass
class Manifest:
    """A parsed, schema-checked ``manifest.json``."""

    name: str
    labels: list[str]
    input_shape: list[int]
    preprocessing: dict[str, Any]
    models: dict[str, ModelEntry]
    files: dict[str, str]
    golden: str | None = None
    created: str | None = None
    model: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # lowering, report, versions ...
    format: str = FORMAT

    @property
    def precisions(self) -> list[str]:
        return [p for p in PRECISIONS if p in self.models]

    def named_files(self) -> list[tuple[str, str]]:
        """Every file the manifest names for use, as (field, relative path)."""
        named = [(f"models.{p}.file", entry.file) for p, entry in self.models.items()]
        if self.golden:
            named.append(("golden", self.golden))
        return named

    def to_dict(self) -> dict[str, Any]:
        fields = {"format": self.format, "name": self.name, "created": self.created,
                  "model": self.model, "labels": list(self.labels),
                  "input_shape": list(self.input_shape), "preprocessing": self.preprocessing,
                  "models": {p: e.to_dict() for p, e in self.models.items()},
                  "golden": self.golden, **self.extra}
        out = {k: fields[k] for k in ORDER if fields.get(k) is not None}
        out.update((k, v) for k, v in fields.items() if k not in out and v is not None)
        out["files"] = dict(self.files)
        return out

    def to_json(self) -> str:
        """The one way a manifest is written."""
        return json.dumps(self.to_dict(), indent=1)


# ------------------------------------------------------------------ the reader
def manifest_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of ``manifest.json``, read once; ``OSError`` passes through, and a file
    too large to be a manifest is a :class:`ManifestError`."""
    with open(path, "rb") as f:
        data = f.read(MAX_MANIFEST_BYTES + 1)
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"larger than {MAX_MANIFEST_BYTES >> 20} MB; not a manifest")
    return data


def manifest_from_bytes(data: bytes) -> Manifest:
    """Parse and check a manifest's bytes; :class:`ManifestError` names what is wrong."""
    try:
        value = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(f"not valid JSON ({exc})") from exc
    except RecursionError as exc:
        raise ManifestError("not valid JSON (nested too deeply)") from exc
    return parse_manifest(value)


def read_manifest_and_id(path: str | os.PathLike) -> tuple[Manifest, str]:
    """Read and check ``manifest.json`` and give its sha256 (the bundle's id).

    Both come from one read, so the id always names the manifest that was checked,
    even if the file is replaced meanwhile."""
    try:
        data = manifest_bytes(path)
    except OSError as exc:
        raise ManifestError(_cannot_read(exc)) from exc
    return manifest_from_bytes(data), hashlib.sha256(data).hexdigest()


def read_manifest(path: str | os.PathLike) -> Manifest:
    """Read and check ``manifest.json``; :class:`ManifestError` names what is wrong."""
    return read_manifest_and_id(path)[0]


def _number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ManifestError(message)


def check_preprocessing(p: Any) -> dict[str, Any]:
    """The ``preprocessing`` object, checked: sizes, the crop, mean and std."""
    _require(isinstance(p, dict), "'preprocessing' must be an object")
    for key in ("canonical_size", "input_size", "mean", "std"):
        _require(key in p, f"'preprocessing.{key}' is missing")
    canonical, size = p["canonical_size"], p["input_size"]
    for key, value in (("canonical_size", canonical), ("input_size", size)):
        _require(type(value) is int and 1 <= value <= MAX_CANONICAL_SIZE,
                 f"'preprocessing.{key}' must be an integer from 1 to {MAX_CANONICAL_SIZE}, "
                 f"got {value!r}")
    _require(canonical >= size, f"'preprocessing.canonical_size' {canonical} is smaller than "
             f"the centre crop 'preprocessing.input_size' {size}")
    for key in ("mean", "std"):
        values = p[key]
        _require(isinstance(values, list) and len(values) == 3 and all(map(_number, values)),
                 f"'preprocessing.{key}' must be a list of 3 numbers (R, G, B), got {values!r}")
    _require(all(v > 0 for v in p["std"]),
             f"'preprocessing.std' must be positive, got {p['std']!r}")
    for key, allowed in (("resample", "bilinear"), ("color", "RGB"), ("layout", "NHWC")):
        _require(p.get(key, allowed) == allowed,
                 f"'preprocessing.{key}' {p.get(key)!r} is not supported (only {allowed!r})")
    _require(isinstance(p.get("name", ""), str), "'preprocessing.name' must be a string")
    return p


def _check_tensor(where: str, info: Any) -> dict[str, Any]:
    _require(isinstance(info, dict), f"'{where}' must be an object")
    dtype = info.get("dtype", "float32")
    _require(dtype in TENSOR_DTYPES,
             f"'{where}.dtype' must be one of {', '.join(TENSOR_DTYPES)}, got {dtype!r}")
    scale, zero = info.get("scale", 0.0), info.get("zero_point", 0)
    _require(_number(scale) and scale >= 0, f"'{where}.scale' must be a number >= 0")
    _require(type(zero) is int, f"'{where}.zero_point' must be an integer")
    _require(dtype == "float32" or scale > 0,
             f"'{where}.scale' must be positive for a {dtype} tensor")
    return info


def _check_models(models: Any) -> dict[str, ModelEntry]:
    _require(isinstance(models, dict) and bool(models), "'models' must be a non-empty object")
    entries = {}
    for precision, info in models.items():
        _require(precision in PRECISIONS, f"'models.{precision}': unknown precision "
                 f"(expected one of {', '.join(PRECISIONS)})")
        _require(isinstance(info, dict) and isinstance(info.get("file"), str),
                 f"'models.{precision}' must be an object with a 'file' string")
        entries[precision] = ModelEntry(
            info["file"], _check_tensor(f"models.{precision}.input", info.get("input", {})),
            _check_tensor(f"models.{precision}.output", info.get("output", {})))
    return entries


def is_label(name: Any) -> bool:
    """Whether ``name`` may name a class: a non-empty string, one line, no surrounding
    spaces."""
    return isinstance(name, str) and bool(name) and name.strip() == name and "\n" not in name


def check_labels(labels: Any) -> None:
    """The rule for class names, from training's folder names to the manifest."""
    _require(isinstance(labels, list) and bool(labels) and all(map(is_label, labels)),
             "'labels' must be a non-empty list of non-empty strings (no surrounding spaces)")
    twice = sorted({x for x in labels if labels.count(x) > 1})
    _require(not twice, f"'labels': {twice[0]!r} appears more than once" if twice else "")


def parse_manifest(value: Any) -> Manifest:
    """The :class:`Manifest` of a decoded ``manifest.json``, checked field by field."""
    _require(isinstance(value, dict),
             f"the manifest is a JSON {type(value).__name__}, not an object")
    _require(value.get("format") == FORMAT,
             f"unknown format {value.get('format')!r} (expected {FORMAT})")
    for key in ("labels", "input_shape", "preprocessing", "models", "files"):
        _require(key in value, f"missing {key!r}")
    labels = value["labels"]
    check_labels(labels)
    shape = value["input_shape"]
    _require(isinstance(shape, list) and len(shape) == 4 and all(
        type(x) is int and x > 0 for x in shape),
        "'input_shape' must be a list of four positive integers")
    _require(shape[0] == 1 and shape[3] == 3,
             f"'input_shape' {shape} must be NHWC with batch 1 and 3 channels")
    preprocessing = check_preprocessing(value["preprocessing"])
    size = preprocessing["input_size"]
    _require(shape[1] == shape[2] == size,
             f"'input_shape' {shape} does not match 'preprocessing.input_size' {size} "
             f"(the model's input is the {size} x {size} crop)")
    files = value["files"]
    _require(isinstance(files, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in files.items()),
        "'files' must be an object mapping file names to sha256 strings")
    bad = [k for k, v in files.items() if not SHA256.fullmatch(v)]
    _require(not bad, f"'files.{bad[0]}' is not a sha256 (64 hex digits)" if bad else "")
    models = _check_models(value["models"])
    golden = value.get("golden")
    _require(golden is None or isinstance(golden, str), "'golden' must be a string")
    name, created = value.get("name", ""), value.get("created")
    _require(isinstance(name, str), "'name' must be a string")
    _require(created is None or isinstance(created, str), "'created' must be a string")
    model = value.get("model")
    _require(model is None or isinstance(model, dict), "'model' must be an object")
    if model is not None and "classes" in model:
        _require(model["classes"] == len(labels), f"'model.classes' is {model['classes']!r} "
                 f"but 'labels' has {len(labels)}")
    for key in ("calibration", "report", "source_model", "versions"):
        _require(not isinstance(value.get(key), (list, str, int, float)),
                 f"'{key}' must be an object")
    known = {"format", "name", "created", "model", "labels", "input_shape", "preprocessing",
             "models", "golden", "files"}
    extra = {k: v for k, v in value.items() if k not in known}
    return Manifest(name=name, labels=list(labels), input_shape=list(shape),
                    preprocessing=preprocessing, models=models, files=dict(files),
                    golden=golden, created=created, model=model, extra=extra)


# ------------------------------------------------------------------ the verifier
def named_file_problems(root: str | os.PathLike, manifest: Manifest) -> list[str]:
    """Files the manifest uses must be inside the bundle and listed in ``files`` (hashed)."""
    problems = []
    for where, name in [*manifest.named_files(), ("labels", LABELS_FILE)]:
        if not is_inside(root, name):
            problems.append(f"{where}: {name!r} is not a path inside the bundle")
        elif name not in manifest.files:
            problems.append(f"{where}: {name!r} is not listed in 'files' (not hashed)")
    return problems


def verify_files(root: str | os.PathLike, files: dict[str, str]) -> list[str]:
    """Problems with the listed files: escaping, missing, unreadable or a hash mismatch."""
    problems = []
    for name, expected in sorted(files.items()):
        path = os.path.join(root, name)
        if not is_inside(root, name):
            problems.append(f"{name}: path escapes the bundle")
            continue
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would hang the hash
                problems.append(f"{name}: not a regular file")
            elif sha256_file(path) != expected:
                problems.append(f"{name}: sha256 mismatch (file changed or corrupt)")
        except (FileNotFoundError, NotADirectoryError):
            problems.append(f"{name}: missing")
        except OSError as exc:
            problems.append(f"{name}: {_cannot_read(exc)}")
    return problems


def read_golden(root: str | os.PathLike, manifest: Manifest) -> dict[str, Any] | None:
    """``golden.json`` (already hashed), checked: each image a listed file inside the bundle,
    each result as many logits as there are labels."""
    if not manifest.golden:
        return None
    try:
        with open(os.path.join(root, manifest.golden), "rb") as f:
            golden = json.loads(f.read().decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise ManifestError(f"{manifest.golden}: not valid JSON") from exc
    images = golden.get("images") if isinstance(golden, dict) else None
    _require(isinstance(images, list), f"{manifest.golden}: 'images' must be a list")
    for i, entry in enumerate(images):
        where = f"{manifest.golden}: images[{i}]"
        _require(isinstance(entry, dict) and isinstance(entry.get("file"), str),
                 f"{where} must be an object with a 'file' string")
        _require(is_inside(root, entry["file"]) and entry["file"] in manifest.files,
                 f"{where}.file {entry['file']!r} is not a listed file inside the bundle")
        for precision in ("keras", *PRECISIONS):
            result = entry.get(precision)
            if result is None:
                continue
            logits = result.get("logits") if isinstance(result, dict) else None
            _require(isinstance(logits, list) and len(logits) == len(manifest.labels),
                     f"{where}.{precision}.logits must be a list of {len(manifest.labels)} "
                     f"numbers (one per label)")
    return golden


def content_problems(root: str | os.PathLike, manifest: Manifest) -> list[str]:
    """What the hashed files say must agree with the manifest: labels.txt and golden.json."""
    try:
        with open(os.path.join(root, LABELS_FILE), "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError as exc:
        return [f"{LABELS_FILE}: {_cannot_read(exc)}"]
    problems = []
    if lines != manifest.labels:
        problems.append(f"{LABELS_FILE}: its {len(lines)} labels do not agree with the "
                        f"manifest's 'labels' ({len(manifest.labels)})")
    try:
        read_golden(root, manifest)
    except ManifestError as exc:
        problems.append(str(exc))
    except OSError as exc:
        problems.append(f"{manifest.golden}: {_cannot_read(exc)}")
    return problems


def verify_bundle(root: str | os.PathLike, manifest: Manifest) -> list[str]:
    """Every check of a bundle's files, in order, stopping at the first step that fails:
    named files inside and listed, every listed file's sha256, then their contents."""
    for step in (named_file_problems, lambda r, m: verify_files(r, m.files), content_problems):
        problems = step(root, manifest)
        if problems:
            return problems
    return []
