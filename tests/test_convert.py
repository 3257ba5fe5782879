"""Calibration sets, conversion to float32/int8 TFLite, op audit, report card, bad input."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from henet_edge.calibration.calibration_set import (
    CalibrationError,
    load_calibration,
    make_calibration,
)
from henet_edge.cli import main
from henet_edge.convert.audit import audit_model
from henet_edge.convert.bundle_writer import ConvertError
from henet_edge.device.bundle import load_bundle, sha256_file
from henet_edge.device.preprocess import DEFAULT, Preprocessing
from henet_edge.device.runtime import TFLiteModel


def test_calibrate_is_stratified_deterministic_and_recorded(image_folder, tmp_path):
    out = tmp_path / "calib.npz"
    result = CliRunner().invoke(main, ["calibrate", "--data", str(image_folder), "--num", "10",
                                       "--seed", "3", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["histogram"] == {"blue": 4, "green": 3, "red": 3}
    calib = load_calibration(out)
    again = make_calibration(str(image_folder), num=10, seed=3)
    np.testing.assert_array_equal(calib.pixels, again.pixels)
    assert calib.provenance["ids"] == again.provenance["ids"]
    assert calib.provenance["sha256"] == info["sha256"]
    assert calib.inputs().shape == (10, 31, 31, 3)
    other = make_calibration(str(image_folder), num=10, seed=4)
    assert other.provenance["ids"] != calib.provenance["ids"]


def test_calibrate_refuses_too_few_and_existing(image_folder, tmp_path):
    with pytest.raises(CalibrationError, match="cannot cover all 3 classes"):
        make_calibration(str(image_folder), num=2)
    with pytest.raises(CalibrationError, match="fewer than"):
        make_calibration(str(image_folder), num=60)
    out = tmp_path / "c.npz"
    out.write_bytes(b"x")
    result = CliRunner().invoke(main, ["calibrate", "--data", str(image_folder), "--out",
                                       str(out)])
    assert result.exit_code == 1 and "already exists" in result.output


@pytest.mark.parametrize("damage", ["truncated", "empty", "provenance a list",
                                    "provenance without preprocessing"])
def test_a_damaged_calibration_file_is_one_line(image_folder, tmp_path, damage):
    good = tmp_path / "good.npz"
    calib = make_calibration(str(image_folder), num=6)
    calib.save(good)
    bad = tmp_path / "bad.npz"
    if damage == "truncated":
        bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif damage == "empty":
        bad.write_bytes(b"")
    else:
        provenance = [] if damage == "provenance a list" else {
            k: v for k, v in calib.provenance.items() if k != "preprocessing"}
        np.savez(bad, pixels=calib.pixels, labels=calib.labels,
                 provenance=json.dumps(provenance))
    with pytest.raises(CalibrationError, match="not a henet-edge calibration set"):
        load_calibration(bad)


@pytest.mark.parametrize("change, said", [
    ({"preprocessing": "default"}, "'preprocessing' must be an object"),
    ({"pixels": "channels first"}, "not uint8 [N, 32, 32, 3]"),
    ({"pixels": "8 x 8"}, "not uint8 [N, 32, 32, 3]"),
    ({"pixels": "none"}, "no images"),
    ({"labels": "one short"}, "labels must be 6 class indices"),
    ({"labels": "out of range"}, "labels must be 6 class indices"),
])
def test_a_hand_made_calibration_file_is_checked_as_well_as_hashed(image_folder, tmp_path,
                                                                   change, said):
    calib = make_calibration(str(image_folder), num=6)
    pixels, labels = calib.pixels, calib.labels
    provenance = dict(calib.provenance)
    pixels = {"channels first": pixels.transpose(0, 3, 1, 2).copy(),
              "8 x 8": pixels[:, :8, :8].copy(),
              "none": pixels[:0]}.get(change.get("pixels"), pixels)
    labels = {"one short": labels[:-1],
              "out of range": labels + 5}.get(change.get("labels"), labels)
    provenance.update({k: v for k, v in change.items() if k == "preprocessing"})
    provenance["sha256"] = hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()
    bad = tmp_path / "bad.npz"
    np.savez(bad, pixels=pixels, labels=labels, provenance=json.dumps(provenance))
    with pytest.raises(CalibrationError, match="not a usable calibration set") as refused:
        load_calibration(bad)
    assert said in str(refused.value)


def test_calibration_with_other_preprocessing_is_refused(image_folder):
    calib = make_calibration(str(image_folder), num=6, spec=Preprocessing(mean=(0.5,) * 3))
    with pytest.raises(CalibrationError, match="preprocessed differently"):
        calib.check_matches(DEFAULT)


def test_bundle_files_and_manifest(tiny_bundle):
    bundle = load_bundle(tiny_bundle)  # verifies every hash
    names = {p.name for p in tiny_bundle.iterdir()}
    assert {"model_float32.tflite", "model_int8.tflite", "labels.txt", "manifest.json",
            "report.json", "report.md", "golden.json", "golden"} <= names
    m = bundle.manifest.to_dict()
    assert m["input_shape"] == [1, 31, 31, 3]
    assert m["labels"] == ["blue", "green", "red"]
    assert (tiny_bundle / "labels.txt").read_text().split() == m["labels"]
    assert m["models"]["int8"]["input"]["dtype"] == "int8"
    assert m["models"]["int8"]["input"]["scale"] > 0
    assert m["models"]["float32"]["input"]["dtype"] == "float32"
    assert m["source_model"]["sha256"]
    assert m["calibration"]["num"] == 12 and m["calibration"]["seed"] == 0
    for name, digest in m["files"].items():
        assert sha256_file(tiny_bundle / name) == digest
    assert {"tensorflow", "keras", "ai_edge_litert", "henet_edge"} <= set(m["versions"])


def test_int8_model_is_full_integer_with_per_channel_weights(tiny_bundle):
    model = TFLiteModel(tiny_bundle / "model_int8.tflite")
    assert model.input_quant.dtype == np.int8 and model.output_quant.dtype == np.int8
    details = model.interpreter.get_tensor_details()
    per_channel = [d for d in details if d["dtype"] == np.int8
                   and len(d["quantization_parameters"]["scales"]) > 1]
    assert per_channel, "conv weights should carry one scale per output channel"
    assert not [d for d in details if d["dtype"] == np.float32]


def test_audit_passes_and_grouped_convs_stay_native(tiny_bundle):
    for precision in ("float32", "int8"):
        audit = audit_model(tiny_bundle / f"model_{precision}.tflite")
        assert audit.ok, audit.problems
        assert audit.fully_delegated and audit.delegate_partitions == 1
        assert "CONV_2D" in audit.ops and "SPLIT" not in audit.ops
        assert not {"SHAPE", "STRIDED_SLICE", "PACK"} & set(audit.ops)
    model = TFLiteModel(tiny_bundle / "model_float32.tflite")
    grouped = [d for d in model.interpreter.get_tensor_details()
               if list(d["shape"]) == [24, 3, 3, 6]]
    assert grouped, "a 24-filter 3x3 conv with 6 input channels per group (groups=4) is expected"


def test_report_card(tiny_bundle, tiny_run):
    import keras

    from henet_edge.device.preprocess import preprocess_pixels
    from henet_edge.device.runtime import TFLiteModel
    from henet_edge.henet_keras.run import Run

    report = json.loads((tiny_bundle / "report.json").read_text())
    assert report["float32"]["top1_agreement"] == 1.0
    assert report["float32"]["max_abs_logit_diff"] < 1e-3
    # int8 agreement, recomputed here: the run's validation split through Keras and int8
    run = Run.load(tiny_run)
    val, _ = run.validation()
    inputs = preprocess_pixels(val.images, run.preprocessing)
    keras_top1 = keras.models.load_model(run.model_path(), compile=False).predict(
        inputs, verbose=0).argmax(1)
    int8 = TFLiteModel(tiny_bundle / "model_int8.tflite")
    int8_top1 = np.array([int8(x).argmax() for x in inputs])
    assert report["images"] == len(val) == 12
    assert report["int8"]["top1_agreement"] == pytest.approx(np.mean(keras_top1 == int8_top1))
    assert set(report["int8"]["per_class_drop_points"]) == {"blue", "green", "red"}
    # HENet repeat 1: one concat per stage; the int8 converter gives a concat's inputs
    # and output one scale, so no branch loses resolution
    assert len(report["concatenations"]) == 3
    for concat in report["concatenations"]:
        assert concat["shared_scale"] is True and concat["branches_losing_resolution"] == []
        assert len({t["scale"] for t in concat["tensors"]}) == 1
        assert concat["tensors"][-1]["role"] == "out"
    assert "Quantization report card" in (tiny_bundle / "report.md").read_text()


def test_golden_images_reproduce_through_the_device_path(tiny_bundle):
    from henet_edge.device.preprocess import open_image, preprocess_image

    bundle = load_bundle(tiny_bundle)
    golden = bundle.golden()["images"]
    assert len(golden) == 3  # one per class
    model = TFLiteModel(bundle.model_path("int8"))
    for entry in golden:
        x = preprocess_image(open_image(str(tiny_bundle / entry["file"])), bundle.preprocessing)
        np.testing.assert_allclose(model(x), entry["int8"]["logits"], atol=1e-6)


def test_evaluate_bundle_uses_the_device_runtime(tiny_bundle, image_folder):
    result = CliRunner().invoke(main, ["evaluate", str(tiny_bundle), "--data", str(image_folder),
                                       "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert set(out["models"]) == {"int8", "float32"} and out["models"]["int8"]["images"] == 48
    # the bundle was calibrated (and its run trained) on this very folder: said so
    assert "not held out" in out["overlap"] and "not held out" in result.stderr


def test_evaluate_says_the_data_is_not_held_out_before_decoding_it(tiny_bundle, image_folder,
                                                                   monkeypatch):
    # Decoding 50,000 training images took minutes; the warning came only after them.
    from henet_edge import HenetEdgeError
    from henet_edge.henet_keras import data as data_module

    def not_now(*_a, **_k):
        raise HenetEdgeError("stopped before decoding")

    monkeypatch.setattr(data_module, "load_source", not_now)
    result = CliRunner().invoke(main, ["evaluate", str(tiny_bundle), "--data",
                                       str(image_folder)])
    assert result.exit_code == 1 and "stopped before decoding" in result.stderr
    assert "not held out" in result.stderr


def test_evaluate_on_a_named_set_scores_its_test_split(tiny_bundle, monkeypatch):
    """evaluate --data cifar10 scored the training split: the 50,000 images a model trained
    on the same images as JPEGs had seen, shown as if held out."""
    from henet_edge.convert.eval_data import load_evaluation_data
    from henet_edge.henet_keras import data as data_module
    from henet_edge.henet_keras.data import DataSource, ImageSet

    def images(value: int, n: int) -> ImageSet:
        return ImageSet(np.full((n, 32, 32, 3), value, np.uint8), np.arange(n) % 3,
                        ["a", "b", "c"], [f"{value}-{i}" for i in range(n)])

    named = DataSource("cifar10", "named", images(1, 9), images(2, 6))
    monkeypatch.setattr(data_module, "load_source", lambda *_a, **_k: named)
    data = load_evaluation_data(tiny_bundle, "cifar10", None)
    assert len(data.labels) == 6 and (data.pixels == 2).all()
    assert data.note == "the test split of cifar10" and data.overlap is None


def test_convert_says_when_its_val_data_is_the_training_data(tiny_run, image_folder, tmp_path):
    """convert --val-data RUN's-OWN-DATA scored training images on the report card, silently."""
    from henet_edge.convert.pipeline import ConvertOptions, convert

    lines: list[str] = []
    result = convert(tiny_run, str(image_folder), tmp_path / "b",
                     ConvertOptions(num=6, gate=False, val_data=str(image_folder)),
                     log=lines.append)
    warning = [line for line in lines if line.startswith("warning: --val-data")]
    assert len(warning) == 1 and "not held out" in warning[0], lines
    card = json.loads((tmp_path / "b" / "report.json").read_text())
    assert "(the model's training data: not held out)" in json.dumps(card), result


def test_convert_calibrates_on_the_run_s_data_without_its_validation_split(
        tiny_bundle, tiny_run, image_folder, tmp_path):
    """Calibration sampled the run's whole data, so int8 ranges were fitted partly on the
    validation images the report card scores (107 of the shipped bundle's 1,000)."""
    from henet_edge.convert.bundle_writer import ConvertError, ConvertOptions, load_source_model
    from henet_edge.convert.pipeline import _calibration
    from henet_edge.henet_keras.run import Run

    val_ids = set(Run.load(tiny_run).validation()[0].ids)
    calib = _calibration(str(image_folder), load_source_model(tiny_run),
                         ConvertOptions(num=36))  # all that is left: 48 less 12
    assert len(val_ids) == 12 and calib.provenance["excluded"] == 12
    assert len(set(calib.provenance["ids"])) == 36 and not val_ids & set(calib.provenance["ids"])
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    assert manifest["calibration"]["excluded"] == 12  # the bundle says so
    with pytest.raises(ConvertError, match="once the run's 12 validation images"):
        _calibration(str(image_folder), load_source_model(tiny_run), ConvertOptions(num=48))
    # A ready .npz of the same data cannot leave them out: used, and said so.
    from henet_edge.calibration.calibration_set import make_calibration

    npz = make_calibration(str(image_folder), num=48)
    npz.save(tmp_path / "all.npz")
    heard: list[str] = []
    _calibration(str(tmp_path / "all.npz"), load_source_model(tiny_run), ConvertOptions(),
                 warn=heard.append)
    assert len(heard) == 1 and "holds 12 of the run's validation images" in heard[0]
    # calibrate --run makes one without them, which convert then uses without a word.
    result = CliRunner().invoke(main, ["calibrate", "--data", str(image_folder), "--num", "36",
                                       "--out", str(tmp_path / "clean.npz"), "--run",
                                       str(tiny_run), "--json"])
    assert result.exit_code == 0, result.output
    heard.clear()
    clean = _calibration(str(tmp_path / "clean.npz"), load_source_model(tiny_run),
                         ConvertOptions(), warn=heard.append)
    assert not heard and not val_ids & set(clean.provenance["ids"])
    result = CliRunner().invoke(main, ["calibrate", "--data", str(tmp_path), "--out",
                                       str(tmp_path / "x.npz"), "--run", str(tiny_run)])
    assert result.exit_code == 2 and "not on --data" in result.output


def test_a_calibration_set_is_not_scored_as_held_out(tiny_run, tiny_bundle, image_folder,
                                                      tmp_path):
    from henet_edge.calibration.calibration_set import make_calibration
    from henet_edge.convert.bundle_writer import held_out_sample, load_source_model

    make_calibration(str(image_folder), num=12).save(tmp_path / "calibration.npz")
    src = load_source_model(tiny_run)
    val, note = src.run.validation()
    held_out_sample(val.images, val.labels, src, note, 6).save(tmp_path / "validation.npz")
    said = {}
    for name in ("calibration", "validation"):
        result = CliRunner().invoke(main, ["evaluate", str(tiny_bundle), "--data",
                                           str(tmp_path / f"{name}.npz"), "--json"])
        assert result.exit_code == 0, result.output
        said[name] = json.loads(result.stdout)
    assert "not a held-out sample" in said["calibration"]["data"]
    assert "may not be held out" in said["calibration"]["overlap"]
    assert "12 images" in said["calibration"]["data"]
    assert said["validation"]["data"].startswith("6 held-out images from validation.npz")
    assert "overlap" not in said["validation"]
    assert [said[name]["data_source"]["kind"] for name in ("calibration", "validation")] \
        == ["calibration sample", "held-out sample"]


def test_evaluate_plot_announces_every_file_it_writes(tiny_bundle, image_folder, tmp_path):
    plot = tmp_path / "cm.png"
    result = CliRunner().invoke(main, ["evaluate", str(tiny_bundle), "--data", str(image_folder),
                                       "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    written = sorted(tmp_path.glob("*.png"))
    assert len(written) == 2  # one per precision
    for path in written:
        assert str(path) in result.output


def _convert(*args):
    return subprocess.run([sys.executable, "-m", "henet_edge.cli", "convert", *args],
                          capture_output=True, text=True)


def test_convert_refuses_existing_output_and_non_keras(tiny_bundle, tiny_run, image_folder,
                                                       tmp_path):
    proc = _convert(str(tiny_run), "--calibration", str(image_folder), "--out", str(tiny_bundle))
    assert proc.returncode == 1 and "already exists" in proc.stderr
    bogus = tmp_path / "model.keras"
    bogus.write_text("not a model")
    proc = _convert(str(bogus), "--calibration", str(image_folder), "--out",
                    str(tmp_path / "b"))
    assert proc.returncode == 1 and "not a Keras model" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "b").exists()


def test_the_bundle_holds_the_model_bytes_that_were_loaded(tiny_run, image_folder, tmp_path,
                                                           monkeypatch):
    """convert loaded model.keras, then copied and hashed the file again: a training run
    saving a new model.keras meanwhile gave a bundle whose source was not what it
    converted, under a hash that vouched for it."""
    import hashlib

    import keras

    from henet_edge.convert.pipeline import ConvertOptions, convert
    from henet_edge.henet_keras.run import Run

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    source = Run.load(run).model_path()  # best.keras here
    loaded = source.read_bytes()
    load = keras.models.load_model

    def load_then_replace(path, *args, **kwargs):
        model = load(path, *args, **kwargs)
        source.write_bytes(b"a newer model saved by the training run")
        return model

    monkeypatch.setattr(keras.models, "load_model", load_then_replace)
    out = tmp_path / "bundle"
    convert(run, str(image_folder), out, ConvertOptions(num=6, gate=False, include_keras=True),
            log=lambda _msg: None)
    manifest = load_bundle(out).manifest.to_dict()  # every hash checked
    assert (out / "source" / "model.keras").read_bytes() == loaded
    assert manifest["source_model"]["sha256"] == hashlib.sha256(loaded).hexdigest()


def test_failed_gate_writes_nothing(tiny_run, image_folder, tmp_path):
    out = tmp_path / "gated"
    proc = _convert(str(tiny_run), "--calibration", str(image_folder), "--num", "6", "--out",
                    str(out), "--min-agreement", "1.01")
    assert proc.returncode == 1
    assert "quantization gates failed" in proc.stderr and "--no-gate" in proc.stderr
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".gated")]
    proc = _convert(str(tiny_run), "--calibration", str(image_folder), "--num", "6", "--out",
                    str(out), "--min-agreement", "1.01", "--no-gate")
    assert proc.returncode == 0  # written, and the failed gate still said
    assert "quantization gates FAILED (ignored: --no-gate): int8 top-1 agreement" in proc.stdout


def test_calibration_for_another_input_size_is_refused(tiny_run, image_folder, tmp_path):
    calib = make_calibration(str(image_folder), num=6,
                             spec=Preprocessing(canonical_size=40, input_size=39))
    calib.save(tmp_path / "c.npz")
    proc = _convert(str(tiny_run), "--calibration", str(tmp_path / "c.npz"), "--out",
                    str(tmp_path / "b"))
    assert proc.returncode == 1 and "preprocessed differently" in proc.stderr


@pytest.mark.parametrize("io", ["uint8", "float32"])
def test_int8_io_types(tiny_run, io):
    from henet_edge.convert.bundle_writer import load_source_model
    from henet_edge.convert.tflite import to_int8

    src = load_source_model(tiny_run)
    calib = np.random.default_rng(0).standard_normal((8, 31, 31, 3)).astype("float32")
    path = tiny_run.parent / f"io_{io}.tflite"
    path.write_bytes(to_int8(src.model, calib, io=io))
    model = TFLiteModel(path)
    assert model.input_quant.dtype == np.dtype(io)
    assert model.output_quant.dtype == np.dtype(io)
    assert model(calib[0]).shape == (3,)
    from henet_edge.device.classify import Classifier

    # an int8 graph whatever its io: not called float32, and --precision int8 takes it
    assert Classifier(path, labels=["a", "b", "c"], precision="int8").precision == "int8"


def test_audit_names_ops_left_outside_xnnpack_and_convert_writes_nothing(tmp_path,
                                                                          image_folder,
                                                                          tiny_bundle):
    """An int8 AVERAGE_POOL_2D is not delegated to XNNPACK: the audit must say so."""
    import keras

    from henet_edge.calibration.calibration_set import make_calibration
    from henet_edge.convert.bundle_writer import (
        ConvertError,
        ReportImages,
        SourceModel,
        convert_bundle,
    )
    from henet_edge.convert.tflite import to_int8

    inputs = keras.Input((31, 31, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    x = keras.layers.AveragePooling2D(3, strides=2)(x)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    outputs = keras.layers.Dense(3)(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs, name="pooled")
    calib = make_calibration(str(image_folder), num=6)
    path = tmp_path / "pooled.tflite"
    path.write_bytes(to_int8(model, calib.inputs()))
    audit = audit_model(path)
    assert not audit.ok and not audit.fully_delegated
    assert any("AVERAGE_POOL_2D" in p for p in audit.problems)
    shown = TFLiteModel(path).delegate  # what classify, bench, doctor and selftest print
    assert shown.startswith("XNNPACK, partial") and "AVERAGE_POOL_2D" in shown
    assert TFLiteModel(path).delegate_kind == "partial"  # what classify and doctor judge by
    full = TFLiteModel(tiny_bundle / "model_int8.tflite")
    assert full.delegate == "XNNPACK" and full.delegate_kind == "full"
    bare = TFLiteModel(tiny_bundle / "model_int8.tflite", xnnpack=False)
    assert bare.delegate_kind == "none"
    result = CliRunner().invoke(main, ["classify", str(tiny_bundle / "golden"), "--model",
                                       str(path), "--labels", str(tiny_bundle / "labels.txt")])
    assert "inference will be slow" in result.stderr  # the partial graph is warned about

    model.save(tmp_path / "pooled.keras")
    src = SourceModel(tmp_path / "pooled.keras", model, ["blue", "green", "red"], DEFAULT, None)
    out = tmp_path / "bundle"
    with pytest.raises(ConvertError, match=r"op audit failed: int8: .*AVERAGE_POOL_2D"):
        convert_bundle(src, calib, out,
                       ReportImages(calib.pixels, calib.labels, "test", calib.inputs()),
                       log=lambda _m: None)
    assert not out.exists() and not list(tmp_path.glob(".bundle*"))


def test_folded_lowering_is_the_same_function_with_fewer_transposes(tiny_bundle, tiny_run,
                                                                      image_folder, tmp_path):
    out = tmp_path / "grouped"
    proc = _convert(str(tiny_run), "--calibration", str(image_folder), "--num", "12",
                    "--no-gate", "--lowering", "grouped", "--include-validation", "6",
                    "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    manifest = load_bundle(out).manifest.to_dict()
    assert "validation.npz" in manifest["files"]  # hashed like every file
    assert manifest["lowering"] == "grouped"
    assert load_bundle(tiny_bundle).manifest.extra["lowering"] == "folded"  # the default
    for bundle in (out, tiny_bundle):  # both compute what Keras computes
        report = json.loads((bundle / "report.json").read_text())
        assert report["float32"]["top1_agreement"] == 1.0
        assert report["float32"]["max_abs_logit_diff"] < 1e-3
    for precision in ("float32", "int8"):
        folded = audit_model(tiny_bundle / f"model_{precision}.tflite")
        grouped = audit_model(out / f"model_{precision}.tflite")
        assert folded.ok and folded.fully_delegated, folded.problems
        assert folded.ops["TRANSPOSE"] < grouped.ops["TRANSPOSE"]
    proc = _convert(str(tiny_run), "--calibration", str(image_folder), "--lowering", "fused",
                    "--out", str(tmp_path / "x"))
    assert proc.returncode == 2 and "fused" in proc.stderr and not (tmp_path / "x").exists()


def test_a_shipped_held_out_sample_is_what_accuracy_is_measured_on(tiny_run, tmp_path):
    from henet_edge.convert.bundle_writer import held_out_sample, load_source_model
    from henet_edge.convert.pipeline import validation_data
    src = load_source_model(tiny_run)
    val, note = src.run.validation()
    sample = held_out_sample(val.images, val.labels, src, note, 6)
    assert sorted(sample.provenance["histogram"].values()) == [2, 2, 2]
    sample.save(tmp_path / "validation.npz")
    pixels, labels, text = validation_data(src, str(tmp_path / "validation.npz"),
                                           np.zeros((1, 32, 32, 3), np.uint8), np.zeros(1),
                                           None)
    np.testing.assert_array_equal(pixels, sample.pixels)
    assert len(labels) == 6 and "held-out" in text and note in text
    other = held_out_sample(val.images, val.labels, src, note, 6)
    other.provenance["class_names"] = ["a", "b", "c"]
    other.save(tmp_path / "other.npz")
    with pytest.raises(ConvertError, match="do not match"):
        validation_data(src, str(tmp_path / "other.npz"), pixels, labels, None)


def test_val_data_with_a_test_split_is_scored_on_that_split(tiny_run, monkeypatch):
    """A named set's training images are never the report card's "held-out" images."""
    from henet_edge.convert.bundle_writer import load_source_model
    from henet_edge.convert.pipeline import validation_data
    from henet_edge.henet_keras import data as data_module
    from henet_edge.henet_keras.data import DataSource, ImageSet

    src = load_source_model(tiny_run)

    def images(value: int, n: int) -> ImageSet:
        return ImageSet(np.full((n, 32, 32, 3), value, np.uint8), np.arange(n) % 3,
                        list(src.labels), [f"{value}-{i}" for i in range(n)])

    loaded = DataSource("named", "named", images(1, 9), images(2, 6))
    monkeypatch.setattr(data_module, "load_source", lambda *_a, **_k: loaded)
    pixels, labels, note = validation_data(src, "named", np.zeros((1, 32, 32, 3), np.uint8),
                                           np.zeros(1), None)
    assert len(labels) == 6 and (pixels == 2).all() and note == "the test split of named"
    folder = DataSource("folder", "folder", images(3, 4))  # no test split: held out whole
    monkeypatch.setattr(data_module, "load_source", lambda *_a, **_k: folder)
    pixels, labels, note = validation_data(src, "folder", pixels, labels, None)
    assert len(labels) == 4 and (pixels == 3).all() and note == "all of folder"


def test_labels_the_manifest_would_refuse_stop_convert_before_the_slow_work(tiny_run):
    """A label with surrounding spaces went through conversion, audit and scoring, then
    the manifest refused it with a traceback."""
    from henet_edge.convert.bundle_writer import ConvertError, load_source_model

    with pytest.raises(ConvertError, match="no surrounding spaces"):
        load_source_model(tiny_run, labels=["red ", "green", "blue"])


# ------------------------------------------------------------------ bare .keras preprocessing
def test_bare_keras_needs_its_run_config_or_preprocessing(tiny_run, tmp_path):
    """A .keras with no run beside it is not silently given the default preprocessing."""
    from henet_edge.convert.bundle_writer import load_source_model

    beside = load_source_model(tiny_run / "model.keras")  # in its run folder
    assert beside.preprocessing_source == str(tiny_run / "config.json")
    assert beside.labels == ["blue", "green", "red"]  # the run's, not class_0 ...
    lonely = tmp_path / "lonely.keras"
    shutil.copy(tiny_run / "model.keras", lonely)
    with pytest.raises(ConvertError, match="--preprocessing default"):
        load_source_model(lonely)
    src = load_source_model(lonely, preprocessing="default")
    assert src.preprocessing == DEFAULT and src.preprocessing_source == "--preprocessing default"
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"preprocessing": {**DEFAULT.to_dict(), "mean": [0.5] * 3}}))
    assert load_source_model(lonely, preprocessing=str(other)).preprocessing.mean == (0.5,) * 3
    other.write_text(json.dumps({**DEFAULT.to_dict(), "canonical_size": 40, "input_size": 39}))
    with pytest.raises(ConvertError, match="39x39"):
        load_source_model(lonely, preprocessing=str(other))
    other.write_text(json.dumps({**DEFAULT.to_dict(), "std": [0, 1, 1]}))
    with pytest.raises(ConvertError, match=r"'preprocessing\.std'"):
        load_source_model(lonely, preprocessing=str(other))


def test_convert_cli_says_where_the_preprocessing_came_from(tiny_run, image_folder, tmp_path):
    lonely = tmp_path / "lonely.keras"
    shutil.copy(tiny_run / "model.keras", lonely)
    args = ["convert", str(lonely), "--calibration", str(image_folder), "--num", "6",
            "--no-gate", "--out", str(tmp_path / "b")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "--preprocessing" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "b").exists()
    result = CliRunner().invoke(main, [*args, "--preprocessing", "default"])
    assert result.exit_code == 0, result.output
    assert "from --preprocessing default" in result.output
    assert load_bundle(tmp_path / "b").preprocessing == DEFAULT


def test_existing_output_is_refused_by_the_one_check(tmp_path, image_folder):
    """calibrate checks its --out before sampling: a dangling link exists too."""
    from henet_edge import OutputFileError
    from henet_edge.storage import check_output_file

    link = tmp_path / "dangling"
    link.symlink_to(tmp_path / "nowhere")
    with pytest.raises(OutputFileError, match="already exists"):
        check_output_file(link)
    check_output_file(link, force=True)
    check_output_file(tmp_path / "new")
    (tmp_path / "c.npz").write_bytes(b"")
    result = CliRunner().invoke(main, ["calibrate", "--data", str(image_folder), "--out",
                                       str(tmp_path / "c.npz")])
    assert result.exit_code == 1 and "already exists (use --force" in result.output
    (tmp_path / "a-file").write_text("")
    (tmp_path / "a-folder.npz").mkdir()
    for out, force, said in ((tmp_path / "a-file" / "c.npz", [], "is a file, not a folder"),
                             (tmp_path / "a-folder.npz", ["--force"], "is a folder"),
                             (Path("/proc/c.npz"), [], "cannot write in /proc")):
        result = CliRunner().invoke(main, ["calibrate", "--data", str(image_folder),
                                           "--out", str(out), *force])
        assert result.exit_code == 1 and said in result.stderr, result.output
        assert "Traceback" not in result.output


def test_force_replaces_only_a_bundle(tiny_bundle, tiny_run, image_folder, tmp_path):
    import shutil

    from henet_edge.convert.output import OutputError, check_output
    from henet_edge.convert.pipeline import ConvertOptions, convert

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    (mine / "manifest.json").write_text('{"name": "my web app"}')  # not a bundle's
    with pytest.raises(OutputError, match=r"not a bundle.*--force replaces only a bundle"):
        convert(tiny_run, str(image_folder), mine, ConvertOptions(force=True),
                log=lambda _m: None)
    assert (mine / "notes.txt").read_text() == "keep me"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        check_output(a_file, force=True)
    old = tmp_path / "old-bundle"
    shutil.copytree(tiny_bundle, old)
    with pytest.raises(OutputError, match="already exists"):
        check_output(old, force=False)
    check_output(old, force=True)  # a bundle may be replaced


def test_an_out_that_cannot_be_written_is_refused_before_any_work(tmp_path, monkeypatch):
    from henet_edge.convert.output import OutputError, check_output

    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_output(tmp_path / "file" / "b", force=False)
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path / "empty")  # an empty current folder: `--out .`
    with pytest.raises(OutputError, match="is the current folder or holds it"):
        check_output(Path("."), force=True)
    for above in ("..", str(tmp_path)):  # holds the current folder (and is no bundle)
        with pytest.raises(OutputError):
            check_output(Path(above), force=True)
    check_output(Path("b"), force=False)  # a new folder in the current one
    if os.geteuid() != 0:  # root writes anywhere
        (tmp_path / "locked").mkdir(mode=0o500)
        with pytest.raises(OutputError, match="permission denied"):
            check_output(tmp_path / "locked" / "new" / "b", force=False)


def test_include_validation_is_checked_before_the_conversion(tiny_run, image_folder, tmp_path,
                                                             monkeypatch):
    from henet_edge.convert import bundle_writer
    from henet_edge.convert.pipeline import ConvertOptions, convert

    def no_conversion(*_a, **_k):
        raise AssertionError("converted before --include-validation was checked")

    monkeypatch.setattr(bundle_writer, "_convert_models", no_conversion)
    with pytest.raises(CalibrationError, match="--include-validation 2 cannot cover all 3"):
        convert(tiny_run, str(image_folder), tmp_path / "b",
                ConvertOptions(num=6, include_validation=2), log=lambda _m: None)
    assert not (tmp_path / "b").exists()


def test_include_validation_beyond_the_split_ships_all_of_it(tiny_run):
    from henet_edge.convert.bundle_writer import held_out_sample, load_source_model

    src = load_source_model(tiny_run)
    val, note = src.run.validation()
    keep = np.sort(np.concatenate([np.flatnonzero(val.labels == 0)[1:],
                                   np.flatnonzero(val.labels != 0)]))
    labels = val.labels[keep]  # the first class one image short
    assert np.bincount(labels)[0] < np.bincount(labels)[1:].max()
    sample = held_out_sample(val.images[keep], labels, src, note, 100_000)
    assert len(sample.labels) == len(labels) == sample.provenance["num"]  # as drawn
    assert sorted(sample.labels.tolist()) == sorted(labels.tolist())


def test_convert_writes_into_an_existing_empty_folder(tiny_run, image_folder, tmp_path):
    from henet_edge.convert.pipeline import ConvertOptions, convert
    from henet_edge.device.bundle import load_bundle

    out = tmp_path / "empty"
    out.mkdir()
    convert(tiny_run, str(image_folder), out, ConvertOptions(num=6, gate=False),
            log=lambda _m: None)
    assert load_bundle(out).labels == ["blue", "green", "red"]


def test_the_report_names_the_bundle_files_not_the_temporary_folder(tiny_bundle):
    report = json.loads((tiny_bundle / "report.json").read_text())
    assert {p: a["path"] for p, a in report["audit"].items()} == {
        "float32": "model_float32.tflite", "int8": "model_int8.tflite"}


def test_a_bundle_folder_is_readable_as_the_umask_allows(tiny_bundle):
    """Bundles came out 0700 (the temporary folder's mode), so a service running as
    another user, or another user, could not read them."""
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(tiny_bundle.stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((tiny_bundle / "golden").stat().st_mode) == 0o777 & ~umask


def test_a_failed_swap_puts_the_replaced_bundle_back(tiny_bundle, tmp_path, monkeypatch):
    from henet_edge.convert import bundle_writer

    out = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, out)
    before = sorted(p.name for p in out.iterdir())
    new = tmp_path / ".bundle.tmp-1"
    new.mkdir()
    real_replace = os.replace

    def failing_second(src, dst):
        if Path(src) == new:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(bundle_writer.os, "replace", failing_second)
    monkeypatch.setattr(bundle_writer, "exchange", lambda _a, _b: False)  # a system without
    with pytest.raises(OSError, match="No space"):
        bundle_writer._swap_into_place(new, out)
    assert sorted(p.name for p in out.iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".bundle.tmp-1", "bundle"]


def test_a_replaced_bundle_is_exchanged_in_one_step_where_the_system_can(tiny_bundle, tmp_path,
                                                                         monkeypatch):
    """Moving the old bundle aside and the new one in left a moment with no bundle under
    the name (a kill there left none); Linux swaps the two folders in one rename."""
    from henet_edge.convert import bundle_writer
    from henet_edge.storage import exchange

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "x").write_text("a"), (b / "y").write_text("b")
    if not exchange(a, b):
        pytest.skip("this system cannot exchange two paths atomically")
    assert (a / "y").read_text() == "b" and (b / "x").read_text() == "a"
    out = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, out)
    new = tmp_path / ".bundle.tmp-1"
    new.mkdir()
    (new / "marker").write_text("new")

    def never(*_a):
        raise AssertionError("moved aside: the name was briefly without a bundle")

    monkeypatch.setattr(bundle_writer.os, "replace", never)
    bundle_writer._swap_into_place(new, out)
    assert [p.name for p in out.iterdir()] == ["marker"] and not new.exists()
