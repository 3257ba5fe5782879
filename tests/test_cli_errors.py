"""Every user error of the desktop commands is one line and a non-zero exit."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from henet_edge.cli import main


def _two_class_folder(image_folder, tmp_path):
    data = tmp_path / "two"
    for name in ("red", "green"):
        shutil.copytree(image_folder / name, data / name)
    return data


def test_evaluate_with_data_of_other_classes_is_one_line(tiny_run, image_folder, tmp_path):
    """Data of some of the model's classes is scored by name (see
    test_a_keras_model_is_scored_on_photos_of_some_of_its_classes); other classes are not."""
    data = _two_class_folder(image_folder, tmp_path)
    (data / "red").rename(data / "purple")
    for model in (tiny_run, tiny_run / "model.keras"):
        result = CliRunner().invoke(main, ["evaluate", str(model), "--data", str(data)])
        assert result.exit_code == 1, result.output
        assert "the model has 3 classes but the data" in result.output
        assert "has 2 (green, purple)" in result.output and "pass --data" in result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_keras_model_is_scored_on_photos_of_some_of_its_classes(tiny_run, image_folder,
                                                                   tmp_path):
    """Runs and .keras files refused what bundles took: photos of 2 of their 3 classes."""
    data = _two_class_folder(image_folder, tmp_path)
    for model in (tiny_run, tiny_run / "model.keras"):
        result = CliRunner().invoke(main, ["evaluate", str(model), "--data", str(data),
                                           "--json"])
        assert result.exit_code == 0, result.output
        out = json.loads(result.stdout)
        assert out["data"].endswith("(2 of the model's 3 classes)")
        keras_result = out["models"]["keras"]
        assert keras_result["per_class"]["blue"] is None
        assert None not in (keras_result["per_class"]["red"],
                            keras_result["per_class"]["green"])
        assert keras_result["images"] == sum(map(sum, keras_result["confusion"])) > 0


def test_a_keras_model_whose_labels_run_in_another_order_is_scored_by_name(
        tiny_run, image_folder, tmp_path):
    """Data with the model's classes in another order passed the count check and was
    scored against the wrong indices."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    config = json.loads((run / "config.json").read_text())
    assert config["labels"] == ["blue", "green", "red"]  # the data's (sorted) order
    config["labels"] = ["red", "green", "blue"]
    (run / "config.json").write_text(json.dumps(config))
    data = tmp_path / "data"
    shutil.copytree(image_folder, data)
    blue = sorted((data / "blue").iterdir())
    blue[0].unlink()  # 1 fewer blue image than any other class: rows can be told apart
    result = CliRunner().invoke(main, ["evaluate", str(run), "--data", str(data), "--json"])
    assert result.exit_code == 0, result.output
    scored = json.loads(result.stdout)["models"]["keras"]
    assert list(scored["per_class"]) == ["red", "green", "blue"]
    rows = [sum(row) for row in scored["confusion"]]
    assert rows[2] == len(blue) - 1 and rows[0] == len(list((data / "red").iterdir()))


def test_evaluate_a_corrupt_tflite_is_one_line(image_folder, tmp_path):
    bad = tmp_path / "model.tflite"
    bad.write_bytes(b"TFL3 but not really a flatbuffer" * 10)
    result = CliRunner().invoke(main, ["evaluate", str(bad), "--data", str(image_folder)])
    assert result.exit_code == 1, result.output
    assert "not a loadable TFLite model" in result.output and "henet-edge convert" in result.output
    assert isinstance(result.exception, SystemExit)


def test_profile_names_the_layers_it_cannot_count():
    import keras

    from henet_edge.henet_keras.profile import ProfileError, summarize

    x = keras.Input((8, 8, 3))
    y = keras.layers.Conv2D(4, 3, use_bias=False)(x)
    y = keras.layers.LayerNormalization()(y)
    y = keras.layers.GlobalAveragePooling2D()(y)
    model = keras.Model(x, keras.layers.Dense(2)(y), name="odd")
    with pytest.raises(ProfileError, match="odd: profile counted 118 of its 126 trainable "
                                           "params; layers it cannot count: "
                                           "LayerNormalization"):
        summarize(model)


@pytest.mark.parametrize("args, message", [
    (["--models", "henet"], "expected FAMILY:R,R;FAMILY:R"),
    (["--models", "henet:0"], "--models repeat must be at least 1, got 0"),
    (["--models", "resnet:2"], "unknown model"),
    (["--models", "henet:1", "--lowering", "grouped,grouped"], "give distinct names"),
    (["--models", "henet:1", "--runs", "0"], "--runs and --repeats must be at least 1"),
    (["--models", "henet:1", "--core", "99"], "--core 99: no such core"),
    (["--models", "henet:1", "--plot", "latency.pdfx"], "no image format '.pdfx'"),
])
def test_compare_bad_arguments_are_one_line_before_tensorflow(args, message):
    code = ("import sys\nfrom henet_edge.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    print('tensorflow' in sys.modules, file=sys.stderr)\n    raise\n")
    proc = subprocess.run([sys.executable, "-c", code, "compare", *args], capture_output=True,
                          text=True)
    assert proc.returncode == 1
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.strip().endswith("False")  # refused before TensorFlow was imported


def test_convert_labels_file_keeps_labels_with_spaces(tiny_run, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("hot dog\nice cream\ncake\n")
    result = CliRunner().invoke(main, ["convert", str(tiny_run / "model.keras"),
                                       "--calibration", str(tmp_path / "missing"),
                                       "--labels", str(labels), "--out", str(tmp_path / "b")])
    assert result.exit_code == 1
    assert "labels for a model" not in result.output  # 3 labels, not 5 words
    assert "missing" in result.output


def test_convert_matches_calibration_classes_to_labels_by_name_not_position(
        tiny_run, image_folder, tmp_path):
    """Labels listing the data's classes in another order passed the count check, and
    the golden images and report card named each image by position: a blue image was
    stored as "red"."""
    from PIL import Image

    labels = tmp_path / "labels.txt"
    labels.write_text("red\ngreen\nblue\n")
    out = tmp_path / "b"
    result = CliRunner().invoke(main, ["convert", str(tiny_run), "--calibration",
                                       str(image_folder), "--num", "6", "--labels",
                                       str(labels), "--out", str(out), "--no-gate",
                                       "--include-calibration"])
    assert result.exit_code == 0, result.output
    golden = json.loads((out / "golden.json").read_text())["images"]
    assert {g["label"] for g in golden} == {"red", "green", "blue"}
    for entry in golden:  # the image's strongest channel is the colour it is named
        pixels = np.asarray(Image.open(out / entry["file"]).convert("RGB"), np.float64)
        strongest = ["red", "green", "blue"][int(pixels.mean(axis=(0, 1)).argmax())]
        assert strongest == entry["label"], entry
    with np.load(out / "calibration.npz") as z:
        assert json.loads(str(z["provenance"]))["class_names"] == ["red", "green", "blue"]


def test_convert_keeps_a_label_that_is_no_file_name(tiny_run, image_folder, tmp_path):
    """Fashion-MNIST's "T-shirt/top": the golden image's file name must not nest."""
    labels = tmp_path / "labels.txt"
    labels.write_text("T-shirt/top\nice cream\ncake\n")
    out = tmp_path / "b"
    result = CliRunner().invoke(main, ["convert", str(tiny_run / "model.keras"),
                                       "--calibration", str(image_folder), "--num", "6",
                                       "--labels", str(labels), "--out", str(out),
                                       "--no-gate"])  # a 2-epoch model: its int8 may differ
    assert result.exit_code == 0, result.output
    golden = json.loads((out / "golden.json").read_text())["images"]
    assert {g["label"] for g in golden} >= {"T-shirt/top"}
    assert all((out / g["file"]).parent == out / "golden" for g in golden)


@pytest.mark.parametrize("option, value, message", [
    ("--report-images", "0", "--report-images must be at least 1, got 0"),
    ("--num", "0", "--num must be at least 1, got 0"),
])
def test_convert_refuses_counts_that_would_mean_something_else(tiny_run, tmp_path, option,
                                                                value, message):
    out = tmp_path / "b"
    result = CliRunner().invoke(main, ["convert", str(tiny_run), "--calibration", "cifar10",
                                       "--out", str(out), option, value])
    assert result.exit_code == 1 and message in result.output
    assert isinstance(result.exception, SystemExit) and not out.exists()


@pytest.mark.parametrize("command", [
    ["bench", "--runs", "5", "--repeats", "1"],
    ["calibrate", "--data", "DATA", "--num", "4", "--out", "OUT/c.npz"],
    ["train", "--data", "DATA", "--out", "OUT/run", "--limit", "8", "--epochs", "1"],
    ["convert", "RUN", "--calibration", "DATA", "--out", "OUT/bundle"],
])
def test_a_seed_out_of_range_is_a_usage_error_not_a_traceback(command, tiny_run, image_folder,
                                                               tmp_path):
    paths = {"DATA": str(image_folder), "RUN": str(tiny_run)}
    args = [paths.get(a, a.replace("OUT", str(tmp_path))) for a in command]
    for seed in ("-1", str(2**64)):  # numpy refused the first, TensorFlow the second
        result = CliRunner().invoke(main, [*args, "--seed", seed])
        assert result.exit_code == 2, result.output
        assert f"'--seed': {seed} is not in the range 0<=x<=4294967295" in result.output
        assert "Traceback" not in result.output and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [["classify", "x.jpg"], ["camera", "--frames", "1"],
                                     ["remote", "classify", "x.jpg", "--host", "pi"]])
def test_top_k_below_one_is_a_usage_error(command):
    """--top-k 0 exited 1 with no usage, where --threads 0 exits 2 with it."""
    result = CliRunner().invoke(main, [*command, "--top-k", "0"])
    assert result.exit_code == 2 and "Usage:" in result.output
    assert "'--top-k': 0 is not in the range x>=1" in result.output


def test_demo_with_both_quick_and_full_is_refused_before_any_work(monkeypatch):
    """The two flags shared one destination, so the last one given won without a word."""
    def never(*_args, **_kwargs):
        raise AssertionError("the demo ran")

    monkeypatch.setattr("henet_edge.deploy.demo.run_demo", never)
    for order in (["--quick", "--full"], ["--full", "--quick"]):
        result = CliRunner().invoke(main, ["demo", *order])
        assert result.exit_code == 2, result.output
        assert "--quick and --full: give one of them" in result.output
