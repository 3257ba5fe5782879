"""Turn a run folder or a ``.keras`` file into a verified bundle folder.

The bundle is built in a temporary folder beside ``out`` and renamed into
place only when every step (conversion, op audit, report card, gates) has
passed, so a failed or interrupted conversion never leaves a half-written
bundle.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from henet_edge import HenetEdgeError
from henet_edge.calibration.calibration_set import DEFAULT_NUM, CalibrationSet
from henet_edge.device.manifest import (
    CALIBRATION_FILE,
    GOLDEN_FILE,
    LABELS_FILE,
    MANIFEST,
    REPORT_JSON,
    REPORT_MD,
    SOURCE_MODEL,
    VALIDATION_FILE,
    Manifest,
    ManifestError,
    ModelEntry,
    check_labels,
    check_preprocessing,
    model_file,
    parse_manifest,
    sha256_file,
)
from henet_edge.device.preprocess import DEFAULT, Preprocessing, open_image, preprocess_image
from henet_edge.device.runtime import TFLiteModel
from henet_edge.henet_keras.run import CONFIG, Run
from henet_edge.henet_keras.tf_env import library_versions
from henet_edge.storage import exchange, utc_timestamp

from .audit import audit_model
from .lowering import DEFAULT_LOWERING
from .output import check_output
from .report import DEFAULT_GATES, Gates, report_card, report_markdown, tflite_logits

BUILT = ("float32", "int8")  # the models a bundle holds, in the order they are made


class ConvertError(HenetEdgeError):
    """A conversion that cannot go on (bad input, failed audit or gate)."""


@dataclass
class SourceModel:
    """A Keras model with what its run folder knows about it.

    ``file_bytes`` are the bytes the model was loaded from: the bundle copies and hashes
    those, not the file as it is later (a training run may replace it meanwhile)."""

    path: Path
    model: object
    labels: list[str]
    preprocessing: Preprocessing
    run_config: dict | None
    preprocessing_source: str = "the run's config.json"
    run: Run | None = None
    file_bytes: bytes | None = None

    def source_bytes(self) -> bytes:
        """The model file's bytes as loaded (read now where none were kept)."""
        return self.file_bytes if self.file_bytes is not None else self.path.read_bytes()

    def source_sha256(self) -> str:
        return hashlib.sha256(self.source_bytes()).hexdigest()


def read_preprocessing(value: str) -> tuple[Preprocessing, str]:
    """``--preprocessing``: ``default`` (henet-edge/v1, CIFAR statistics, 32 -> 31 crop) or a
    JSON file holding it (a run's config.json, a bundle's manifest.json, or the object)."""
    if value == "default":
        return DEFAULT, "--preprocessing default"
    path = Path(value)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ConvertError(f"--preprocessing {value}: cannot be read "
                           f"({exc.strerror or exc}); pass 'default' or a JSON file") from None
    except (ValueError, RecursionError) as exc:
        raise ConvertError(f"--preprocessing {value}: not valid JSON") from exc
    if isinstance(data, dict) and isinstance(data.get("preprocessing"), dict):
        data = data["preprocessing"]
    try:
        check_preprocessing(data)
    except ManifestError as exc:
        raise ConvertError(f"--preprocessing {value}: {exc}") from None
    return Preprocessing.from_dict(data), f"--preprocessing {value}"


def run_config_in(folder: Path) -> dict | None:
    """The run's ``config.json`` in ``folder``, if there is one."""
    cfg = folder / CONFIG
    if not cfg.is_file():
        return None
    try:
        config = json.loads(cfg.read_text())
    except (ValueError, RecursionError) as exc:
        raise ConvertError(f"{cfg}: not valid JSON") from exc
    return config if isinstance(config, dict) and "preprocessing" in config else None


def keras_preprocessing(model_path: Path, config: dict | None,
                        preprocessing: str | None) -> tuple[Preprocessing, str] | None:
    """A Keras model's preprocessing and where it came from: ``--preprocessing`` when
    given, else its run's config (``config``, or the one beside the file); None when a
    bare ``.keras`` has neither."""
    if preprocessing is not None:
        return read_preprocessing(preprocessing)
    if config is None:
        config = run_config_in(model_path.parent)
    if config is None:
        return None
    return Preprocessing.from_dict(config["preprocessing"]), str(model_path.parent / CONFIG)


def load_source_model(path: str | Path, labels: list[str] | None = None,
                      preprocessing: str | None = None) -> SourceModel:
    """Load ``RUN_DIR`` (its best.keras, else model.keras) or a ``.keras`` file.

    The preprocessing is ``--preprocessing`` when given, else the run's: its
    config.json, also beside a bare ``.keras`` taken from a run folder. A bare
    ``.keras`` with neither is refused rather than given the default silently.
    """
    import keras

    from henet_edge.henet_keras import layers as _layers  # noqa: F401 - custom layers

    path = Path(path)
    config = run = None
    if path.is_dir():
        if not Run.is_run(path):
            raise ConvertError(f"{path}: not a run folder (no config.json) and not a .keras file")
        run = Run.load(path)
        config, model_path = run.config, run.model_path()
    else:
        model_path = path
        if not path.exists():
            raise ConvertError(f"{path}: no such file")
    try:  # read once: what is loaded is what the bundle copies and hashes
        file_bytes = model_path.read_bytes()
    except OSError as exc:
        raise ConvertError(f"{model_path}: cannot be read ({exc.strerror or exc})") from None
    with tempfile.TemporaryDirectory(prefix="henet-edge-model-") as scratch:
        snapshot = Path(scratch) / f"model{model_path.suffix}"
        snapshot.write_bytes(file_bytes)
        try:
            model = keras.models.load_model(snapshot, compile=False)
        except Exception as exc:
            said = str(exc).replace(str(snapshot), str(model_path)).splitlines()
            raise ConvertError(f"{model_path}: not a Keras model ({type(exc).__name__}: "
                               f"{(said or [''])[0][:200]})") from exc
    if config is None:
        config = run_config_in(model_path.parent)
    classes = int(model.outputs[0].shape[-1])
    if labels is None:
        labels = config["labels"] if config else [f"class_{i}" for i in range(classes)]
    if len(labels) != classes:
        raise ConvertError(f"{len(labels)} labels for a model with {classes} outputs")
    try:  # before the slow work: the manifest refuses them at the end otherwise
        check_labels(list(labels))
    except ManifestError as exc:
        raise ConvertError(f"labels {list(labels)!r}: {exc}") from None
    found = keras_preprocessing(model_path, config, preprocessing)
    if found is None:
        raise ConvertError(f"{model_path}: a bare .keras file has no run config.json beside "
                           "it to take the preprocessing from; pass --preprocessing default "
                           "(henet-edge/v1: CIFAR mean/std, 32 -> 31 centre crop) or "
                           "--preprocessing FILE.json (a run's config.json or a bundle's "
                           "manifest.json)")
    spec, source = found
    size = model.inputs[0].shape[1]
    if size != spec.input_size:
        raise ConvertError(f"model input is {size}x{size} but preprocessing gives "
                           f"{spec.input_size}x{spec.input_size} (from {source})")
    return SourceModel(model_path, model, list(labels), spec, config,
                       preprocessing_source=source, run=run, file_bytes=file_bytes)


def _golden(labels: np.ndarray, class_names: list[str], count: int):
    """Up to ``count`` images, one per class first."""
    picked: list[int] = []
    for c in range(len(class_names)):
        hits = np.flatnonzero(labels == c)
        if len(hits) and len(picked) < count:
            picked.append(int(hits[0]))
    return picked


def _model_meta(src: SourceModel) -> dict:
    from henet_edge.henet_keras.profile import summarize
    from henet_edge.henet_keras.registry import detect_family, model_spec

    if src.run_config:
        spec = model_spec(src.run_config["train"]["model"])
    else:
        spec = detect_family(src.model)
    # A model of no known family is counted the plain way (every conv with its bias).
    summary = summarize(src.model, conv_bias=spec.conv_bias if spec else True)
    meta = {"name": src.model.name, "classes": len(src.labels), "params": summary["params"],
            "macs": summary["macs"]}
    if src.run_config:
        train = src.run_config["train"]
        meta.update(family=train["model"], repeat=train["repeat"])
    return meta


def _quant(quant) -> dict:
    return {"dtype": str(quant.dtype), "scale": quant.scale, "zero_point": quant.zero_point}


@dataclass
class ConvertOptions:
    """How ``convert`` samples, scores, gates and packs a bundle (the CLI's options)."""

    num: int = DEFAULT_NUM  # calibration images when sampling a data source
    seed: int = 0
    val_data: str | None = None  # report-card images [the run's validation split]
    report_images: int | None = None  # at most this many of them
    io: str = "int8"  # input/output type of the int8 model
    force: bool = False  # replace an existing bundle (never anything else)
    gate: bool = True
    gates: Gates = DEFAULT_GATES
    labels: list[str] | None = None  # for a bare .keras
    include_keras: bool = False
    include_calibration: bool = False
    include_validation: int = 0
    lowering: str = DEFAULT_LOWERING
    preprocessing: str | None = None  # for a bare .keras: "default" or a JSON file

    def __post_init__(self) -> None:
        """Refuse counts that would silently mean something else (0 is not "all")."""
        if self.num < 1:
            raise ConvertError(f"--num must be at least 1, got {self.num}")
        if self.report_images is not None and self.report_images < 1:
            raise ConvertError(f"--report-images must be at least 1, got {self.report_images}"
                               " (leave it out to use every validation image)")
        if self.include_validation < 0:
            raise ConvertError(f"--include-validation must be 0 or more, got "
                               f"{self.include_validation}")



@dataclass
class ReportImages:
    """The labelled images the report card scores on (canonical pixels and model inputs)."""

    pixels: np.ndarray
    labels: np.ndarray
    note: str  # where they came from, for the report and manifest
    inputs: np.ndarray  # ``pixels`` preprocessed for the model


def convert_bundle(src: SourceModel, calibration: CalibrationSet, out: Path,
                   images: ReportImages, options: ConvertOptions | None = None, *,
                   golden_count: int = 8, log: Callable[[str], None] = print) -> dict:
    """Convert, audit, score and write the bundle ``out``; returns the manifest.

    Everything is written into a temporary folder beside ``out`` and moved into
    place only when every step passed, so a failure leaves nothing behind.
    """
    options = options or ConvertOptions()
    out = Path(out)
    check_output(out, options.force)
    calibration.check_matches(src.preprocessing)
    held_out = (held_out_sample(images.pixels, images.labels, src, images.note,
                                options.include_validation)
                if options.include_validation else None)  # refused before any slow work
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 would lock others (a service user) out
    try:
        audits = _convert_models(src, calibration, tmp, options, log)
        models = {p: TFLiteModel(tmp / model_file(p)) for p in BUILT}
        keras_logits = np.asarray(src.model.predict(images.inputs, batch_size=256, verbose=0))
        report = _write_report(src, models, keras_logits, images, audits, tmp, options, log)
        golden = _write_golden(tmp, images.pixels, images.labels, src, models["float32"],
                               models["int8"], keras_logits, golden_count)
        _write_extras(src, calibration, held_out, tmp, options)
        manifest = _manifest(src, calibration, models, report, len(golden), images.note, tmp,
                             options)
        text = manifest.to_json()
        parse_manifest(json.loads(text))  # the writer never writes what the device refuses
        (tmp / MANIFEST).write_text(text)
        _swap_into_place(tmp, out)
        log(f"bundle written to {out}")
        return manifest.to_dict()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _convert_models(src: SourceModel, calibration: CalibrationSet, tmp: Path,
                    options: ConvertOptions, log: Callable[[str], None]) -> dict:
    """Step 1: float32 and int8 TFLite into ``tmp``, each passing the op audit."""
    from .lowering import lower
    from .tflite import to_float32, to_int8

    t0 = time.perf_counter()
    graph = lower(src.model, options.lowering)  # the same function; the report card checks it
    (tmp / model_file("float32")).write_bytes(to_float32(graph))
    log(f"float32 converted, {options.lowering} lowering ({time.perf_counter() - t0:.1f}s)")
    t0 = time.perf_counter()
    (tmp / model_file("int8")).write_bytes(to_int8(graph, calibration.inputs(), io=options.io))
    log(f"int8 converted with {len(calibration.pixels)} calibration images "
        f"({time.perf_counter() - t0:.1f}s)")
    audits = {p: audit_model(tmp / model_file(p)) for p in BUILT}
    problems = [f"{p}: {msg}" for p, a in audits.items() for msg in a.problems]
    if problems:
        raise ConvertError("op audit failed: " + "; ".join(problems))
    log("op audit passed: builtins only, static shapes, fully delegated to XNNPACK")
    return audits


def _write_report(src: SourceModel, models: dict[str, TFLiteModel], keras_logits: np.ndarray,
                  images: ReportImages, audits: dict, tmp: Path,
                  options: ConvertOptions, log: Callable[[str], None] = print) -> dict:
    """Step 2: the report card (Keras vs float32 vs int8), refused if a gate fails."""
    report = report_card(keras_logits, tflite_logits(models["float32"], images.inputs),
                         tflite_logits(models["int8"], images.inputs), images.labels,
                         src.labels, tmp / model_file("int8"), options.gates, images.note)
    audit_dicts = {p: a.to_dict() for p, a in audits.items()}
    for entry in audit_dicts.values():  # name the bundle's file, not the temporary folder
        if "path" in entry:
            entry["path"] = Path(entry["path"]).name
    sizes = {p: (tmp / model_file(p)).stat().st_size for p in BUILT}
    (tmp / REPORT_JSON).write_text(json.dumps(
        {**report, "audit": audit_dicts, "sizes": sizes}, indent=1))
    (tmp / REPORT_MD).write_text(report_markdown(report, audit_dicts, sizes))
    if not report["gates"]["passed"]:
        failures = "; ".join(report["gates"]["failures"])
        if not options.gate:
            log(f"quantization gates FAILED (ignored: --no-gate): {failures}")
            return report
        keras_top1 = report["keras"]["top1"]
        barely = (f" The Keras model itself scores {100 * keras_top1:.1f}% here: a barely "
                  "trained model's int8 rounding flips many of its near-ties, so train it "
                  "longer first." if keras_top1 < 0.5 else "")
        raise ConvertError(f"quantization gates failed: {failures}. Try a larger or more "
                           "representative --calibration set, or pass --no-gate to write "
                           f"the bundle anyway.{barely}")
    return report


def _write_extras(src: SourceModel, calibration: CalibrationSet,
                  held_out: CalibrationSet | None, tmp: Path, options: ConvertOptions) -> None:
    """Step 3: labels, and what was asked to travel with the bundle."""
    (tmp / LABELS_FILE).write_text("\n".join(src.labels) + "\n")
    if options.include_keras:
        (tmp / SOURCE_MODEL).parent.mkdir()
        (tmp / SOURCE_MODEL).write_bytes(src.source_bytes())
    if options.include_calibration:  # lets `henet-edge demo` re-convert from the bundle alone
        calibration.save(tmp / CALIBRATION_FILE)
    if held_out is not None:  # ... and measure accuracy on held-out images
        held_out.save(tmp / VALIDATION_FILE)


def _manifest(src: SourceModel, calibration: CalibrationSet, models: dict[str, TFLiteModel],
              report: dict, golden_count: int, note: str, tmp: Path,
              options: ConvertOptions) -> Manifest:
    """Step 4: the manifest of everything in ``tmp``, each file with its sha256."""
    entries = {p: ModelEntry(model_file(p), _quant(m.input_quant), _quant(m.output_quant))
               for p, m in models.items()}
    files = {str(p.relative_to(tmp)): sha256_file(p) for p in sorted(tmp.rglob("*"))
             if p.is_file()}
    return Manifest(
        name=src.model.name,
        created=utc_timestamp(),
        model=_model_meta(src),
        labels=src.labels,
        input_shape=list(models["float32"].input_shape),
        preprocessing=src.preprocessing.to_dict(),
        models=entries,
        golden=GOLDEN_FILE,
        extra={
            "lowering": options.lowering,
            "golden_count": golden_count,
            "calibration": {k: v for k, v in calibration.provenance.items() if k != "ids"}
            | {"ids_count": len(calibration.provenance["ids"])},
            "report": {"keras_top1": report["keras"]["top1"],
                       "float32_top1": report["float32"]["top1"],
                       "int8_top1": report["int8"]["top1"],
                       "int8_agreement": report["int8"]["top1_agreement"],
                       "data": note, "images": report["images"]},
            "source_model": {"file": src.path.name, "sha256": src.source_sha256(),
                             "included": options.include_keras},
            "versions": library_versions(),
        },
        files=files,
    )


def held_out_sample(pixels: np.ndarray, labels: np.ndarray, src: SourceModel, note: str,
                    num: int) -> CalibrationSet:
    """A stratified, seeded sample of the validation images, stored like a calibration set."""
    from henet_edge.calibration.calibration_set import held_out_ids, sample

    return sample(pixels, labels, src.labels, held_out_ids(len(labels)),
                  num=num, seed=0, spec=src.preprocessing, source=note,
                  option="--include-validation", all_if_fewer=True)


def _write_golden(tmp: Path, pixels: np.ndarray, labels: np.ndarray, src: SourceModel,
                  float_model: TFLiteModel, int8_model: TFLiteModel, keras_logits: np.ndarray,
                  count: int) -> list[dict]:
    """Save golden images as PNG and record the desktop's results on them.

    The results come from reading the PNG back through the device's own
    decode and preprocessing path, so the device must reproduce them exactly.
    """
    (tmp / "golden").mkdir()
    entries = []
    for n, i in enumerate(_golden(labels, src.labels, count)):
        # a label is any text ("T-shirt/top"); the file name keeps its safe characters
        safe = re.sub(r"[^\w.-]", "_", src.labels[labels[i]], flags=re.ASCII)
        name = f"golden/{n:02d}_{safe}.png"
        Image.fromarray(pixels[i]).save(tmp / name)
        x = preprocess_image(open_image(str(tmp / name)), src.preprocessing)
        entry = {"file": name, "label": src.labels[labels[i]],
                 "keras": {"top1": int(keras_logits[i].argmax()),
                           "logits": [float(v) for v in keras_logits[i]]}}
        for precision, model in (("float32", float_model), ("int8", int8_model)):
            logits = model(x)
            entry[precision] = {"top1": int(logits.argmax()),
                                "logits": [float(v) for v in logits]}
        entries.append(entry)
    (tmp / GOLDEN_FILE).write_text(json.dumps({"images": entries}, indent=1))
    return entries


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Move the finished bundle onto ``out``. A bundle already there is exchanged with it
    in one step where the system can (Linux); elsewhere it is moved aside first and comes
    back if the second rename fails (only a kill between the two renames can then leave
    ``out`` absent, with the old bundle beside it as ``.NAME.old-PID``)."""
    if out.exists() and exchange(tmp, out):
        shutil.rmtree(tmp, ignore_errors=True)  # now the old bundle
        return
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
