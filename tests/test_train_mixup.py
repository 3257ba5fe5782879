"""Mixup (``train --mixup ALPHA``): the blend, the pipelines that use it, runs and refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from henet_edge.cli import main
from henet_edge.henet_keras.run import Run
from henet_edge.henet_keras.train import RunError, TrainConfig, train

from .conftest import killed_after_last_epoch


@pytest.fixture(scope="module")
def mixup_run(tiny_run, image_folder, tmp_path_factory):
    """A finished 2-epoch HENet-r1 run with mixup, a weight average and a teacher."""
    run_dir = tmp_path_factory.mktemp("mixup") / "run"
    lines: list[str] = []
    config = TrainConfig(data=str(image_folder), repeat=1, epochs=2, batch_size=8,
                         val_split=0.25, seed=0, ema=0.5, mixup=1.0,
                         teachers=[str(tiny_run)])
    train(config, run_dir, show_bar=False, echo=lines.append)
    return run_dir, lines


def _splits(image_folder):
    from henet_edge.henet_keras.data import load_source, split_validation

    return split_validation(load_source(str(image_folder), 32).train, 0.25, 0)


def test_mixup_weights_are_seeded_by_key_and_lie_between_0_and_1():
    from henet_edge.henet_keras.datasets import mixup_weights

    weights = mixup_weights(1.0, seed=0)
    w = weights(256, 40).numpy()
    assert w.shape == (256,) and ((w >= 0) & (w <= 1)).all()
    assert 0.4 < w.mean() < 0.6 and w.std() > 0.2  # Beta(1, 1) is uniform
    np.testing.assert_array_equal(w, weights(256, 40).numpy())  # a resume draws the same
    assert not np.allclose(w, weights(256, 41).numpy())
    assert not np.allclose(w, mixup_weights(1.0, seed=1)(256, 40).numpy())
    peaked = mixup_weights(0.2, seed=0)(256, 40).numpy()  # small alpha: mostly near 0 or 1
    assert np.mean((peaked < 0.1) | (peaked > 0.9)) > 0.5


def test_blend_mixes_each_item_with_its_mirror():
    from henet_edge.henet_keras.datasets import blend

    x = np.arange(4 * 2 * 3, dtype=np.float32).reshape(4, 2, 3)
    w = np.array([1.0, 0.25, 0.5, 0.0], np.float32)
    got = blend(x, w).numpy()
    for i in range(4):
        np.testing.assert_allclose(got[i], w[i] * x[i] + (1 - w[i]) * x[3 - i])
    labels = np.eye(3, dtype=np.float32)[[0, 1, 2, 0]]
    np.testing.assert_allclose(blend(labels, w).numpy().sum(-1), 1.0, rtol=1e-6)


def test_the_training_pipeline_blends_images_labels_and_teacher_targets_alike(image_folder):
    """Each batch is the plain batch blended with the weights its first position keys."""
    from henet_edge.device.preprocess import DEFAULT
    from henet_edge.henet_keras.datasets import blend, make_datasets, mixup_weights

    train_set, val_set = _splits(image_folder)

    def targets(images):  # a "teacher" whose answer is a function of the pixels it gets
        import tensorflow as tf

        return tf.nn.softmax(tf.reduce_mean(images, axis=[1, 2]))

    common = {"spec": DEFAULT, "augment": "cifar", "batch_size": 8, "steps_per_epoch": 2,
              "first_epoch": 1, "last_epoch": 2, "seed": 0, "classes": 3}
    plain, _ = make_datasets(train_set, val_set, **common)
    mixed, val_ds = make_datasets(train_set, val_set, **common, soft_targets=targets,
                                  mixup=0.4)
    weights = mixup_weights(0.4, seed=0)
    for step, ((x, y), (xm, ym)) in enumerate(zip(plain, mixed, strict=True)):
        w = weights(8, 16 + 8 * step)  # epoch 1 starts at position 2 steps x 8
        np.testing.assert_allclose(xm, blend(x, w), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ym[:, :3], blend(y, w), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ym[:, 3:], targets(xm), rtol=1e-5)  # teachers see the blend
        assert not np.allclose(xm, x)
    assert set(np.unique(next(iter(val_ds))[1])) <= {0.0, 1.0}  # validation is not blended


def test_the_recalibration_sample_is_blended_like_training(image_folder):
    from henet_edge.device.preprocess import DEFAULT
    from henet_edge.henet_keras.datasets import blend, mixup_weights, recalibration_batches

    train_set, _ = _splits(image_folder)
    plain = recalibration_batches(train_set, DEFAULT, batch_size=16, seed=2)
    mixed = recalibration_batches(train_set, DEFAULT, batch_size=16, seed=2, mixup=1.0)
    weights = mixup_weights(1.0, seed=2)
    assert len(mixed) == len(plain)
    for i, (p, m) in enumerate(zip(plain, mixed, strict=True)):
        np.testing.assert_allclose(m, blend(p, weights(len(p), -1 - i)), rtol=1e-5, atol=1e-6)


def test_a_mixup_run_records_it_and_resume_finishes(mixup_run, tmp_path):
    run_dir, lines = mixup_run
    assert json.loads((run_dir / "config.json").read_text())["train"]["mixup"] == 1.0
    assert Run.load(run_dir).train_config.mixup == 1.0
    assert any("mixup alpha 1.0" in line for line in lines)
    assert [h["epoch"] for h in Run.load(run_dir).history] == [1, 2]
    copy = killed_after_last_epoch(run_dir, tmp_path / "killed")
    summary = train(TrainConfig(data=None, model=None, repeat=None), copy, resume=True,
                    show_bar=False, echo=lambda _m: None)
    assert summary["finished"]


def test_resume_with_another_alpha_is_refused(mixup_run, image_folder, tmp_path):
    copy = killed_after_last_epoch(mixup_run[0], tmp_path / "killed")
    before = (copy / "config.json").read_text()
    with pytest.raises(RunError, match=r"mixup=1\.0, not 0\.2"):
        train(TrainConfig(data=None, model=None, repeat=None, mixup=0.2), copy, resume=True,
              show_bar=False, echo=lambda _m: None)
    assert (copy / "config.json").read_text() == before


@pytest.mark.parametrize("alpha", ["0", "-1"])
def test_an_alpha_not_above_0_is_one_line(alpha, tmp_path):
    result = CliRunner().invoke(main, ["train", "--data", str(tmp_path), "--out",
                                       str(tmp_path / "r"), "--mixup", alpha])
    assert result.exit_code == 1
    assert "--mixup must be above 0" in result.output
    assert not (tmp_path / "r").exists()
