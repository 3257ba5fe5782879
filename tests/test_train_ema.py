"""Weight averaging (``train --ema``): what is validated, shipped, checkpointed and refused."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from henet_edge.cli import main
from henet_edge.henet_keras.run import Run
from henet_edge.henet_keras.train import RunError, TrainConfig, train

from .conftest import killed_after_last_epoch


@pytest.fixture(scope="module")
def ema_run(image_folder, tmp_path_factory):
    """A finished 2-epoch HENet-r1 run that ships its weight average (decay 0.5)."""
    run_dir = tmp_path_factory.mktemp("ema") / "run"
    lines: list[str] = []
    config = TrainConfig(data=str(image_folder), repeat=1, epochs=2, batch_size=8,
                         val_split=0.25, seed=0, ema=0.5)
    train(config, run_dir, show_bar=False, echo=lines.append)
    return run_dir, lines


def _load(path):
    import keras

    from henet_edge.henet_keras import layers as _layers  # noqa: F401

    return keras.models.load_model(path)


def test_history_keeps_the_raw_weights_as_the_control(ema_run):
    run_dir, lines = ema_run
    history = Run.load(run_dir).history
    assert [h["epoch"] for h in history] == [1, 2]
    for row in history:
        for key in ("val_loss", "val_accuracy", "val_top5"):
            assert row[f"raw_{key}"] >= 0 and row[key] >= 0
    assert any("weight average (EMA) 0.5" in line for line in lines)
    assert sum("(raw " in line for line in lines if line.startswith("epoch ")) == 2
    assert "raw_val_accuracy" in (run_dir / "history.csv").read_text().splitlines()[0]


def _recalibration(run_dir):
    """The run's own batch-norm recalibration sample, rebuilt from its config."""
    import json

    from henet_edge.henet_keras.datasets import recalibration_batches
    from henet_edge.henet_keras.run import load_training_data

    run = Run.load(run_dir)
    _, train_set, _ = load_training_data(run.train_config)
    plan = json.loads((run_dir / "config.json").read_text())["plan"]
    return recalibration_batches(train_set, run.preprocessing, batch_size=plan["batch_size"],
                                 seed=run.train_config.seed)


def test_the_shipped_model_holds_the_average_not_the_raw_weights(ema_run):
    from henet_edge.henet_keras.ema import shipped_weights, uses_average

    run_dir, _ = ema_run
    checkpoint = _load(run_dir / "checkpoint.keras")
    assert uses_average(checkpoint)  # the average is saved with the optimiser state
    shipped = _load(run_dir / "model.keras").get_weights()
    averaged = shipped_weights(checkpoint, _recalibration(run_dir))
    raw = checkpoint.get_weights()
    assert [w.shape for w in shipped] == [w.shape for w in averaged]
    for got, want in zip(shipped, averaged, strict=True):
        np.testing.assert_array_equal(got, want)
    assert any(not np.array_equal(a, r) for a, r in zip(averaged, raw, strict=True))


def test_the_validation_logged_is_the_shipped_models(ema_run):
    """Scoring model.keras on the run's validation split gives the last row's val_accuracy."""
    run_dir, _ = ema_run
    run = Run.load(run_dir)
    val, _ = run.validation()
    model = _load(run_dir / "model.keras")
    spec = run.preprocessing
    o = spec.crop_offset()
    from henet_edge.device.preprocess import normalize

    x = normalize(val.images[:, o:o + spec.input_size, o:o + spec.input_size, :], spec)
    predicted = np.argmax(model.predict(x.astype(np.float32), verbose=0), axis=1)
    assert np.mean(predicted == val.labels) == pytest.approx(run.history[-1]["val_accuracy"])


def test_resume_continues_the_saved_average(ema_run, tmp_path):
    """Killed after the last checkpoint: the resumed run still ships the checkpoint's average."""
    from henet_edge.henet_keras.ema import shipped_weights

    run_dir, _ = ema_run
    run = killed_after_last_epoch(run_dir, tmp_path / "killed")
    train(Run.load(run).train_config, run, resume=True, show_bar=False, echo=lambda _m: None)
    averaged = shipped_weights(_load(run / "checkpoint.keras"), _recalibration(run))
    for got, want in zip(_load(run / "model.keras").get_weights(), averaged, strict=True):
        np.testing.assert_array_equal(got, want)


def test_the_shipped_batch_norm_statistics_are_recomputed_for_the_average(ema_run):
    """Not the raw weights' moving statistics, which do not fit the averaged weights."""
    import keras

    run_dir, _ = ema_run
    checkpoint = _load(run_dir / "checkpoint.keras")
    shipped = _load(run_dir / "model.keras")
    ours = {layer.name: layer for layer in shipped.layers}
    norms = [(layer, ours[layer.name]) for layer in checkpoint.layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms
    for raw, ours in norms:
        assert not np.allclose(raw.moving_mean.numpy(), ours.moving_mean.numpy())


def _bn_model():
    import keras

    inputs = keras.Input((3,))
    return keras.Model(inputs, keras.layers.BatchNormalization(momentum=0.9)(inputs))


def test_recalibration_sets_the_mean_of_the_batch_statistics():
    from henet_edge.henet_keras.ema import recalibrate_batch_norm

    model = _bn_model()
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc, scale, (16, 3)).astype(np.float32)
               for loc, scale in [(0.0, 1.0), (5.0, 2.0), (-3.0, 0.5)]]
    recalibrate_batch_norm(model, batches)
    bn = model.layers[-1]
    np.testing.assert_allclose(bn.moving_mean.numpy(),
                               np.mean([b.mean(axis=0) for b in batches], axis=0), rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(),
                               np.mean([b.var(axis=0) for b in batches], axis=0), rtol=1e-4)
    assert bn.momentum == pytest.approx(0.9)  # the layer's own momentum is put back
    with pytest.raises(ValueError, match="at least one batch"):
        recalibrate_batch_norm(model, [])


def test_the_raw_weights_and_statistics_come_back_after_the_average(ema_run):
    from henet_edge.henet_keras.ema import averaged

    run_dir, _ = ema_run
    checkpoint = _load(run_dir / "checkpoint.keras")
    before = checkpoint.get_weights()
    with averaged(checkpoint, _recalibration(run_dir)):
        inside = checkpoint.get_weights()
    after = checkpoint.get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(inside, before, strict=True))
    for a, b in zip(after, before, strict=True):
        np.testing.assert_array_equal(a, b)


def test_resume_with_another_decay_is_refused(ema_run, image_folder, tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.json").write_text((ema_run[0] / "config.json").read_text())
    with pytest.raises(RunError, match=r"ema=0\.5, not 0\.9"):
        train(TrainConfig(data=str(image_folder), model=None, repeat=None, ema=0.9), run,
              resume=True, echo=lambda _m: None)


def test_a_run_without_ema_ships_its_raw_weights(tiny_run):
    assert "raw_val_accuracy" not in Run.load(tiny_run).history[0]
    assert Run.load(tiny_run).train_config.ema is None


@pytest.mark.parametrize("decay", ["0", "1", "1.5", "-0.1"])
def test_a_decay_outside_0_to_1_is_one_line(decay, tmp_path):
    result = CliRunner().invoke(main, ["train", "--data", str(tmp_path), "--out",
                                       str(tmp_path / "r"), "--ema", decay])
    assert result.exit_code == 1
    assert "--ema must be above 0 and below 1" in result.output
    assert not (tmp_path / "r").exists()


def test_the_recalibration_sample_is_augmented_like_training():
    """Padded, shifted and flipped as in training: centre crops have other statistics."""
    import numpy as np

    from henet_edge.device.preprocess import DEFAULT, normalize
    from henet_edge.henet_keras.data import ImageSet
    from henet_edge.henet_keras.datasets import recalibration_batches

    n, size = 64, DEFAULT.canonical_size
    images = np.full((n, size, size, 3), 200, np.uint8)  # bright, so padding shows
    images[:, :, : size // 2] = 50  # and a left/right asymmetry, so flips show
    train = ImageSet(images, np.zeros(n, np.int64), ["a"], [str(i) for i in range(n)])
    again = recalibration_batches(train, DEFAULT, batch_size=16, seed=3)
    x = np.concatenate(recalibration_batches(train, DEFAULT, batch_size=16, seed=3))
    assert np.array_equal(x, np.concatenate(again))  # seeded: a resume ships the same
    black = normalize(np.zeros((1, 1, 1, 3), np.uint8), DEFAULT).reshape(3)
    has_border = [bool(np.isclose(img, black).all(axis=-1).any()) for img in x]
    assert 0 < sum(has_border) < n  # zero padding in some crops, not all
    left_dark = x[:, :, 5, 0] < x[:, :, -6, 0]
    assert 0 < left_dark[:, size // 2].sum() < n  # some flipped, some not
    plain = np.concatenate(recalibration_batches(train, DEFAULT, batch_size=16, seed=3,
                                                 augment="none"))
    assert not any(np.isclose(img, black).all(axis=-1).any() for img in plain)


def test_recalibration_batches_mix_classes_like_training():
    """A split stored class by class still gives mixed batches, as training's shuffle does.

    Sorted picks made each batch nearly one class; the deep layers' batch variance
    then came out about 30 % low and the averaged weights lost almost a point.
    """
    import numpy as np

    from henet_edge.device.preprocess import DEFAULT
    from henet_edge.henet_keras.data import ImageSet
    from henet_edge.henet_keras.datasets import recalibration_batches

    classes, per_class, size = 4, 64, DEFAULT.canonical_size
    labels = np.repeat(np.arange(classes), per_class)  # stored class by class
    images = np.broadcast_to((40 + 50 * labels).astype(np.uint8)[:, None, None, None],
                             (len(labels), size, size, 3)).copy()
    train = ImageSet(images, labels, [str(c) for c in range(classes)],
                     [str(i) for i in range(len(labels))])
    for batch in recalibration_batches(train, DEFAULT, batch_size=32, seed=0, augment="none"):
        brightness = np.round(batch[:, size // 2, size // 2, 0], 3)
        assert len(np.unique(brightness)) >= 3  # several classes in every batch


def test_recalibration_check_scores_the_raw_weights_as_training_did(ema_run):
    """The benchmark's 'own statistics' figure is the run's last raw validation."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    run_dir, _ = ema_run
    script = Path(__file__).parents[1] / "benchmarks" / "recalibration_check.py"
    out = subprocess.run([sys.executable, str(script), str(run_dir), "--samples", "1",
                          "--images", "16"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    own = re.search(r"raw weights, own statistics: ([\d.]+) %", out.stdout)
    assert own, out.stdout
    last = Run.load(run_dir).history[-1]
    assert float(own.group(1)) == pytest.approx(100 * last["raw_val_accuracy"], abs=0.01)
    assert re.search(r"sample 0: recomputed [\d.]+ %; average, recomputed [\d.]+ %", out.stdout)
    assert "16 images per sample" in out.stdout
