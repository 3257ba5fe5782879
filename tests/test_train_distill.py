"""Distillation (``train --teacher``): the loss, the teachers' targets, runs, resume, refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from henet_edge.cli import main
from henet_edge.henet_keras.run import Run
from henet_edge.henet_keras.train import RunError, TrainConfig, train

from .conftest import killed_after_last_epoch

PIPELINE = Path(__file__).resolve().parents[1] / "benchmarks" / "distill_pipeline.py"


def _config(image_folder, **changes) -> TrainConfig:
    base = {"data": str(image_folder), "repeat": 1, "epochs": 2, "batch_size": 8,
            "val_split": 0.25, "seed": 0}
    return TrainConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def distilled(tiny_run, image_folder, tmp_path_factory):
    """A finished 2-epoch HENet-r1 run taught by ``tiny_run`` (itself, twice: an ensemble)."""
    run_dir = tmp_path_factory.mktemp("kd") / "run"
    lines: list[str] = []
    config = _config(image_folder, teachers=[str(tiny_run), str(tiny_run)],
                     distill_weight=0.7, distill_temperature=3.0)
    train(config, run_dir, show_bar=False, echo=lines.append)
    return run_dir, lines


def _softmax(z, t=1.0):
    e = np.exp(z / t - (z / t).max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_the_loss_is_hintons_and_bare_labels_get_plain_cross_entropy():
    from henet_edge.henet_keras.distill import DistillationLoss

    rng = np.random.default_rng(0)
    logits = rng.standard_normal((6, 4)).astype("float32")
    labels = np.eye(4, dtype="float32")[rng.integers(0, 4, 6)]
    teacher = _softmax(rng.standard_normal((6, 4)), 2.0).astype("float32")
    smooth = labels * 0.9 + 0.1 / 4
    ce = -(smooth * np.log(_softmax(logits))).sum(-1)
    student = _softmax(logits, 2.0)
    kl = (teacher * np.log(teacher / student)).sum(-1) * 4.0
    loss = DistillationLoss(4, weight=0.6, temperature=2.0, label_smoothing=0.1)
    got = float(loss(np.concatenate([labels, teacher], -1), logits))
    assert got == pytest.approx(float(np.mean(0.4 * ce + 0.6 * kl)), rel=1e-4)
    assert float(loss(labels, logits)) == pytest.approx(float(ce.mean()), rel=1e-4)
    restored = DistillationLoss.from_config(loss.get_config())
    assert (restored.classes, restored.weight, restored.temperature) == (4, 0.6, 2.0)


def test_teachers_label_the_same_augmented_images_the_student_sees(image_folder):
    from henet_edge.device.preprocess import DEFAULT
    from henet_edge.henet_keras.data import load_source, split_validation
    from henet_edge.henet_keras.datasets import make_datasets

    train_set, val_set = split_validation(load_source(str(image_folder), 32).train, 0.25, 0)

    def targets(images):  # a "teacher" whose answer is a function of the pixels it gets
        import tensorflow as tf

        return tf.nn.softmax(tf.reduce_mean(images, axis=[1, 2]))

    train_ds, val_ds = make_datasets(train_set, val_set, spec=DEFAULT, augment="cifar",
                                     batch_size=8, steps_per_epoch=2, first_epoch=0,
                                     last_epoch=1, seed=0, classes=3, soft_targets=targets)
    for x, y in train_ds:
        assert y.shape == (8, 6)
        np.testing.assert_allclose(y[:, 3:], targets(x), rtol=1e-5)
        assert set(np.unique(y[:, :3])) <= {0.0, 1.0}
    assert next(iter(val_ds))[1].shape[-1] == 3  # validation keeps bare labels


def test_flipped_teachers_average_each_image_and_its_mirror(capfd):
    import keras

    from henet_edge.henet_keras.tflite_teachers import TFLiteTeachers

    rng = np.random.default_rng(1)
    images = rng.standard_normal((5, 4, 6, 3)).astype("float32")  # not symmetric
    inputs = keras.Input((4, 6, 3))
    teacher = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(inputs)))

    def probs(x):
        return _softmax(np.asarray(teacher(x)), 2.0)

    expected = (probs(images) + probs(images[:, :, ::-1])) / 2
    got = TFLiteTeachers([teacher], 2.0, flip=True).labels(images)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    plain = TFLiteTeachers([teacher], 2.0).labels(images)
    np.testing.assert_allclose(plain, probs(images), rtol=1e-5, atol=1e-6)
    assert not np.allclose(got, plain)
    assert capfd.readouterr().out == ""  # the converter's signature dump stays out of stdout


def test_tflite_teachers_label_as_their_keras_models_do_in_the_pipeline(tiny_run):
    """Real HENet teachers (native grouped convs), any batch size, as a tf.data op."""
    import tensorflow as tf

    from henet_edge.henet_keras.distill import load_teachers
    from henet_edge.henet_keras.tflite_teachers import TFLiteTeachers

    models = load_teachers([Run.load(tiny_run)] * 2, classes=3)
    teachers = TFLiteTeachers(models, 4.0, flip=True, threads=1, chunk=3)
    whole = TFLiteTeachers(models, 4.0, flip=True, threads=1, chunk=None)
    rng = np.random.default_rng(2)
    shape = tuple(models[0].inputs[0].shape[1:])
    for batch in (8, 3, 8, 1):  # chunks of 3, 3 and 2; one chunk; ... (shapes change)
        x = rng.standard_normal((batch, *shape)).astype("float32")
        keras_probs = np.mean([_softmax(np.asarray(m(v, training=False)), 4.0)
                               for m in models for v in (x, x[:, :, ::-1])], axis=0)
        ds = tf.data.Dataset.from_tensors(x).map(teachers)
        got = next(iter(ds))
        assert got.shape == (batch, 3)
        np.testing.assert_allclose(got, keras_probs, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(got, whole.labels(x), rtol=1e-6, atol=1e-7)


def test_a_flipped_teacher_run_records_it_and_refuses_another_resume(
        tiny_run, image_folder, tmp_path):
    run_dir, lines = tmp_path / "flip", []
    train(_config(image_folder, epochs=1, teachers=[str(tiny_run)], teacher_flip=True),
          run_dir, show_bar=False, echo=lines.append)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["plan"]["distillation"]["flip"] is True
    assert Run.load(run_dir).train_config.teacher_flip is True
    assert any("each image and its mirror image; teachers run as float32 TFLite" in line
               for line in lines)


def test_resume_with_flipped_teachers_is_refused_for_a_run_without(
        distilled, tiny_run, tmp_path):
    copy = killed_after_last_epoch(distilled[0], tmp_path / "killed")
    before = (copy / "config.json").read_text()
    with pytest.raises(RunError, match="teacher_flip=False, not True"):
        train(TrainConfig(data=None, model=None, repeat=None, teachers=[str(tiny_run)] * 2,
                          teacher_flip=True), copy, resume=True, show_bar=False,
              echo=lambda _m: None)
    assert (copy / "config.json").read_text() == before


def test_a_distilled_run_records_its_teachers_and_ships_a_plain_model(distilled, tiny_run):
    import keras

    from henet_edge.henet_keras import layers as _layers  # noqa: F401

    run_dir, lines = distilled
    config = json.loads((run_dir / "config.json").read_text())
    assert config["plan"]["distillation"] == {"teachers": 2, "weight": 0.7, "temperature": 3.0}
    assert all(not t.startswith("/") for t in config["train"]["teachers"])  # relative
    assert Run.load(run_dir).train_config.teachers == [str(tiny_run)] * 2  # and found again
    assert any(line.startswith("distilling from 2 teachers") for line in lines)
    history = Run.load(run_dir).history
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(0 <= h["accuracy"] <= 1 and 0 <= h["val_accuracy"] <= 1 for h in history)
    shipped = keras.models.load_model(run_dir / "model.keras")
    plain = keras.models.load_model(tiny_run / "model.keras")
    assert [w.shape for w in shipped.get_weights()] == [w.shape for w in plain.get_weights()]
    assert shipped.output_shape == plain.output_shape == (None, 3)  # logits, no teachers'
    assert [type(x).__name__ for x in shipped.layers] == [type(x).__name__ for x in plain.layers]
    import zipfile

    for name in ("model.keras", "best.keras"):  # nothing of the distillation is shipped
        with zipfile.ZipFile(run_dir / name) as saved:
            assert "Distillation" not in saved.read("config.json").decode()
    with zipfile.ZipFile(run_dir / "checkpoint.keras") as saved:  # only resume needs it
        assert "DistillationLoss" in saved.read("config.json").decode()


def test_the_checkpoint_keeps_the_distillation_loss_and_resume_finishes(distilled, tmp_path):
    import keras

    from henet_edge.henet_keras import layers as _layers  # noqa: F401
    from henet_edge.henet_keras.distill import DistillationLoss

    run_dir, _ = distilled
    checkpoint = keras.models.load_model(run_dir / "checkpoint.keras")
    assert isinstance(checkpoint.loss, DistillationLoss)
    assert (checkpoint.loss.weight, checkpoint.loss.temperature) == (0.7, 3.0)
    copy = killed_after_last_epoch(run_dir, tmp_path / "killed")
    summary = train(TrainConfig(data=None, model=None, repeat=None), copy, resume=True,
                    show_bar=False, echo=lambda _m: None)
    assert summary["finished"] and summary["epochs"] == 2


def test_resume_with_other_teachers_is_refused(distilled, image_folder, tmp_path):
    run_dir, _ = distilled
    copy = killed_after_last_epoch(run_dir, tmp_path / "killed")
    before = (copy / "config.json").read_text()
    with pytest.raises(RunError, match="teachers"):
        train(TrainConfig(data=None, model=None, repeat=None, teachers=[str(image_folder)]),
              copy, resume=True,
              show_bar=False, echo=lambda _m: None)
    assert (copy / "config.json").read_text() == before


def test_a_teacher_that_held_out_other_images_is_refused(tiny_run, image_folder, tmp_path):
    config = _config(image_folder, seed=1, teachers=[str(tiny_run)])
    with pytest.raises(RunError, match=r"different seed.*validation images"):
        train(config, tmp_path / "leaky", show_bar=False, echo=lambda _m: None)
    assert not (tmp_path / "leaky").exists()


@pytest.mark.parametrize("args, message", [
    (["--teacher", "{missing}"], "not a run folder"),
    (["--teacher", "{unfinished}"], "has not finished"),
    (["--distill-weight", "0.5"], "need a --teacher"),
    (["--teacher-flip"], "--teacher-flip needs a --teacher"),
    (["--teacher", "{tiny}", "--distill-weight", "1.5"], "from 0 to 1"),
    (["--teacher", "{tiny}", "--distill-temperature", "0"], "above 0"),
])
def test_bad_distillation_options_are_one_line_and_make_nothing(
        args, message, tiny_run, image_folder, tmp_path):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    config = json.loads((tiny_run / "config.json").read_text())
    (unfinished / "config.json").write_text(json.dumps(config))
    names = {"missing": tmp_path / "nope", "unfinished": unfinished, "tiny": tiny_run}
    args = [a.format(**names) for a in args]
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--data", str(image_folder), "--out", str(out),
                                       "--repeat", "1", "--epochs", "1", *args])
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_the_pipeline_benchmark_times_both_ways_with_the_runs_own_teachers(distilled):
    """``benchmarks/distill_pipeline.py`` builds its teachers the way training does."""
    run_dir, train_lines = distilled
    done = subprocess.run([sys.executable, str(PIPELINE), str(run_dir), "--steps", "1",
                           "--rounds", "1"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    teacher_line = next(line for line in train_lines if line.startswith("distilling from"))
    assert teacher_line in done.stdout  # the same teachers, weight, temperature as training
    assert "teachers beside the step" in done.stdout and "teachers in the step" in done.stdout
    assert "in the step over beside it:" in done.stdout


def test_the_pipeline_benchmark_refuses_a_run_without_teachers_in_one_line(tiny_run):
    done = subprocess.run([sys.executable, str(PIPELINE), str(tiny_run), "--steps", "1"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 1
    assert "was not trained with --teacher" in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


def test_the_teacher_benchmark_times_every_way_and_their_labels_agree(tiny_run):
    """``benchmarks/teacher_speed.py``: Keras, TFLite whole and chunked, and a lowering."""
    script = PIPELINE.with_name("teacher_speed.py")
    done = subprocess.run([sys.executable, str(script), str(tiny_run), str(tiny_run), "--flip",
                           "--batch", "5", "--chunk", "2", "--passes", "1", "--rounds", "1",
                           "--lowering", "folded"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    differences = [float(line.rsplit(" ", 1)[1]) for line in done.stdout.splitlines()
                   if "largest label difference" in line]
    assert len(differences) == 4  # whole and chunks over keras, chunks over whole, folded
    assert max(differences) < 1e-5
    assert "tflite, chunks, folded over chunks:" in done.stdout
