"""``henet-edge evaluate`` of TFLite models and bundles: the loader, the data, bad images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from henet_edge.cli import main
from henet_edge.device.bundle import BundleError
from henet_edge.device.classify import DEFAULT_BUNDLE

from .device_helpers import wrong_shape_model


def _evaluate(*args: str):
    result = CliRunner().invoke(main, ["evaluate", *args])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def test_a_bundle_without_data_uses_its_shipped_validation_sample():
    result = _evaluate(str(DEFAULT_BUNDLE), "--precision", "int8", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert "validation.npz" in out["data"]
    assert out["data_source"] == {"kind": "held-out sample",
                                  "path": str(DEFAULT_BUNDLE / "validation.npz")}
    assert out["models"]["int8"]["images"] == 1000
    assert out["models"]["int8"]["top1"] > 0.7  # the shipped model is about 86 % accurate


def test_data_may_be_a_held_out_npz(tmp_path):
    sample = shutil.copy(DEFAULT_BUNDLE / "validation.npz", tmp_path / "held_out.npz")
    result = _evaluate(str(DEFAULT_BUNDLE / "model_float32.tflite"), "--data", str(sample))
    assert result.exit_code == 0, result.output
    assert "float32: top-1" in result.stdout and "held_out.npz" in result.stdout


def test_a_bundle_without_validation_and_no_data_is_one_line(tiny_bundle):
    result = _evaluate(str(tiny_bundle))
    assert result.exit_code == 1
    assert "--data is required" in result.stderr and result.stderr.count("\n") == 1


def test_every_unreadable_image_is_reported_and_the_exit_code_is_1(tmp_path, image_folder,
                                                                  tiny_bundle):
    data = Path(shutil.copytree(image_folder, tmp_path / "data"))
    classes = sorted(p.name for p in data.iterdir())
    (data / classes[0] / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (data / classes[1] / "empty.jpg").write_bytes(b"")
    result = _evaluate(str(tiny_bundle), "--data", str(data), "--precision", "int8")
    assert result.exit_code == 1
    assert "top-1" in result.stdout  # the good images are still measured
    assert f"{classes[0]}/broken.jpg" in result.stderr
    assert f"{classes[1]}/empty.jpg" in result.stderr
    assert "2 images could not be read" in result.stderr


def test_models_go_through_the_classify_loader(tmp_path, image_folder):
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"not a flatbuffer" * 64)
    result = _evaluate(str(garbage), "--data", str(image_folder))
    assert result.exit_code == 1
    assert "not a loadable TFLite model" in result.stderr
    assert result.stderr.count("\n") == 1

    wrong = wrong_shape_model(tmp_path, 3)  # 32x32 input where the preprocessing gives 31x31
    result = _evaluate(str(wrong), "--data", str(image_folder))
    assert result.exit_code == 1 and "wrong input shape" in result.stderr

    five = _dense_model(tmp_path / "five.tflite", [5])  # the data has 3 classes
    result = _evaluate(str(five), "--data", str(image_folder))
    assert result.exit_code == 1 and "5 outputs but there are 3 labels" in result.stderr

    two = _dense_model(tmp_path / "two.tflite", [3, 3])
    result = _evaluate(str(two), "--data", str(image_folder))
    assert result.exit_code == 1 and "one input and one output" in result.stderr


def _dense_model(path: Path, outputs: list[int]) -> Path:
    """A float32 ``.tflite`` taking the preprocessing's 31x31x3 input, with these outputs."""
    import keras
    import tensorflow as tf

    inputs = keras.Input((31, 31, 3), batch_size=1)
    flat = keras.layers.Flatten()(inputs)
    heads = [keras.layers.Dense(n)(flat) for n in outputs]
    model = keras.Model(inputs, heads if len(heads) > 1 else heads[0])
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return path


def test_plot_says_where_each_file_landed_and_a_bad_folder_is_one_line(tmp_path):
    """--plot DIR wrote DIR.png but announced DIR; a missing parent was a traceback."""
    sample = shutil.copy(DEFAULT_BUNDLE / "validation.npz", tmp_path / "held_out.npz")
    folder = tmp_path / "plots"
    folder.mkdir()
    for plot, expected in ((folder, [folder / "confusion.png", folder / "confusion-float32.png"]),
                           (tmp_path / "cm", [tmp_path / "cm.png", tmp_path / "cm-float32.png"]),
                           # a missing folder named with a slash wrote new.png beside it
                           (f"{tmp_path}/new/", [tmp_path / "new" / "confusion.png",
                                                 tmp_path / "new" / "confusion-float32.png"])):
        result = _evaluate(str(DEFAULT_BUNDLE), "--data", str(sample), "--plot", str(plot))
        assert result.exit_code == 0, result.output
        assert [f"confusion matrix: {p}" for p in expected] == [
            line for line in result.stdout.splitlines() if line.startswith("confusion matrix")]
        assert all(p.is_file() for p in expected)
    (tmp_path / "a-file").write_text("in the way")
    result = _evaluate(str(DEFAULT_BUNDLE), "--data", str(sample), "--plot",
                       str(tmp_path / "a-file" / "cm.png"))
    assert result.exit_code == 1
    assert "cannot write the plot (Not a directory)" in result.stderr
    assert result.stderr.count("\n") == 1


def test_data_is_decoded_at_the_models_canonical_size(tiny_bundle, image_folder, tmp_path):
    """A bundle made with --preprocessing of canonical size 33: its evaluation images are
    decoded at 33 (and centre-cropped to 31), as classify decodes them, not at 32."""
    from henet_edge.convert.eval_data import load_evaluation_data
    from henet_edge.convert.evaluate import _preprocessing_of, evaluate_model

    from .device_helpers import copy_bundle, rewrite_manifest

    bundle = copy_bundle(tiny_bundle, tmp_path / "b33")
    manifest = json.loads((bundle / "manifest.json").read_text())
    rewrite_manifest(bundle, preprocessing={**manifest["preprocessing"], "canonical_size": 33})
    spec = _preprocessing_of(bundle, None, None)
    assert spec.canonical_size == 33
    data = load_evaluation_data(bundle, str(image_folder), None, spec)
    assert data.pixels.shape[1:] == (33, 33, 3)
    result = evaluate_model(bundle, data=str(image_folder), precision="int8")
    assert result["models"]["int8"]["images"] == len(data.labels)


def test_a_bundles_own_tflite_is_evaluated_as_the_bundle_reads_it(tiny_bundle, tmp_path):
    """model_int8.tflite inside a bundle: the bundle's preprocessing and hashes, not the
    defaults of a bare file (its data was decoded one way and its model fed another)."""
    from henet_edge.device.evaluate import evaluate_tflite, tflite_models

    from .device_helpers import copy_bundle, rewrite_manifest

    bundle = copy_bundle(tiny_bundle, tmp_path / "b")
    manifest = json.loads((bundle / "manifest.json").read_text())
    rewrite_manifest(bundle, preprocessing={**manifest["preprocessing"], "canonical_size": 35,
                                            "mean": [0.5, 0.5, 0.5]})
    models, _ = tflite_models(bundle / "model_int8.tflite")
    spec = models["int8"].preprocessing
    assert list(models) == ["int8"] and spec.canonical_size == 35 and spec.mean == (0.5,) * 3
    pixels = np.zeros((2, 35, 35, 3), np.uint8)
    result = evaluate_tflite(models, pixels, np.zeros(2, int), manifest["labels"])
    assert result["int8"]["images"] == 2  # fed as loaded, not reopened as a bare file
    (bundle / "labels.txt").write_text("tampered\n")
    with pytest.raises(BundleError, match="sha256"):
        tflite_models(bundle / "model_int8.tflite")


def test_a_class_without_images_has_no_accuracy_and_stays_valid_json():
    from henet_edge.convert.evaluate import format_evaluation
    from henet_edge.device.metrics import classification_metrics

    names = ["a", "b", "c", "d"]
    logits = np.eye(4)[[0, 0, 2, 3, 3, 1]]  # "b" has no image; labels below
    metrics = classification_metrics(logits, np.array([0, 2, 2, 3, 0, 0]), names)
    assert metrics["per_class"] == {"a": 1 / 3, "b": None, "c": 0.5, "d": 1.0}
    json.loads(json.dumps(metrics, allow_nan=False))  # NaN is no JSON
    text = format_evaluation({"models": {"int8": metrics}, "data": "six images"})
    assert "weakest classes: a 33.3%, c 50.0%, d 100.0%" in text
    with pytest.raises(ValueError, match="labels must be 0 to 3"):
        classification_metrics(logits, np.array([0, 2, 2, 3, 0, -1]), names)


def test_evaluate_of_a_file_that_is_no_model_says_so(tmp_path, image_folder):
    """evaluate README.md asked for --data, and with --data leaked a cut-off Keras error."""
    (tmp_path / "notes.md").write_text("# not a model\n")
    for extra in ([], ["--data", str(image_folder)]):
        result = CliRunner().invoke(main, ["evaluate", str(tmp_path / "notes.md"), *extra])
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert "notes.md: not a model: give a .keras or .tflite file" in result.output


def test_a_bundle_is_scored_on_photos_of_some_of_its_classes(tiny_bundle, tmp_path):
    """Photos of a few of the model's classes were refused (10 classes against 5)."""
    import shutil

    from .conftest import write_image_folder

    data = write_image_folder(tmp_path / "mine", per_class=4)
    shutil.rmtree(data / "green")  # the model knows red, green, blue; these are red, blue
    result = CliRunner().invoke(main, ["evaluate", str(tiny_bundle), "--data", str(data),
                                       "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["data"].endswith("(2 of the model's 3 classes)")
    for model in out["models"].values():
        assert model["images"] == 8 and model["per_class"]["green"] is None
        assert model["per_class"]["red"] is not None and model["per_class"]["blue"] is not None
        assert sum(map(sum, model["confusion"])) == 8
        labels = json.loads((tiny_bundle / "manifest.json").read_text())["labels"]
        assert sum(model["confusion"][labels.index("green")]) == 0  # no green image
    (data / "cyan").mkdir()
    shutil.copy(next((data / "red").iterdir()), data / "cyan" / "x.jpg")
    result = CliRunner().invoke(main, ["evaluate", str(tiny_bundle), "--data", str(data)])
    assert result.exit_code == 1 and "differ from the data's classes" in result.output
