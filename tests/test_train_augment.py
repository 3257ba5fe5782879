"""Training augmentation (``train --augment``): the views each mode draws, runs and refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from henet_edge.cli import main
from henet_edge.device.preprocess import DEFAULT, normalize
from henet_edge.henet_keras.run import Run, load_training_data
from henet_edge.henet_keras.train import RunError, TrainConfig, train

from .conftest import killed_after_last_epoch


@pytest.fixture(scope="module")
def flip_run(image_folder, tmp_path_factory):
    """A finished 1-epoch HENet-r1 run trained on centre crops and their mirrors."""
    run_dir = tmp_path_factory.mktemp("augment") / "run"
    config = TrainConfig(data=str(image_folder), repeat=1, epochs=1, batch_size=8,
                         val_split=0.25, seed=0, ema=0.5, augment="flip")
    train(config, run_dir, show_bar=False, echo=lambda _m: None)
    return run_dir


def _views(augment: str, n: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """``n`` training views of one random image, and that image's centre crop."""
    from henet_edge.henet_keras.datasets import augmenter

    image = np.random.default_rng(0).integers(1, 256, (32, 32, 3), dtype=np.uint8)
    view = augmenter(DEFAULT, augment, seed=3)
    views = np.stack([view(image, position).numpy() for position in range(n)])
    o, size = DEFAULT.crop_offset(), DEFAULT.input_size
    return views, normalize(image[o:o + size, o:o + size], DEFAULT)


def test_flip_views_are_the_centre_crop_or_its_mirror_and_both_occur():
    views, centre = _views("flip")
    plain = [np.allclose(v, centre) for v in views]
    mirrored = [np.allclose(v, centre[:, ::-1]) for v in views]
    assert all(p or m for p, m in zip(plain, mirrored, strict=True))
    assert 10 < sum(mirrored) < 54  # about half, seeded


def test_cifar_views_shift_and_show_padded_borders_that_flip_views_never_do():
    zero = normalize(np.zeros(3, np.float32), DEFAULT)  # a padded pixel, normalised
    cifar, centre = _views("cifar")
    flip, _ = _views("flip")

    def bordered(v):
        return np.allclose(v[:, 0], zero) or np.allclose(v[:, -1], zero)

    assert sum(bordered(v) for v in cifar) > 10
    assert not any(bordered(v) for v in flip)
    assert not all(np.allclose(v, centre) or np.allclose(v, centre[:, ::-1]) for v in cifar)


def test_none_is_the_centre_crop_and_an_unknown_mode_is_refused():
    from henet_edge.henet_keras.datasets import augmenter

    views, centre = _views("none", n=4)
    assert all(np.allclose(v, centre) for v in views)
    with pytest.raises(ValueError, match="unknown augmentation 'sideways'"):
        augmenter(DEFAULT, "sideways", seed=0)


def test_a_run_records_its_augmentation_and_its_statistics_sample_uses_it(flip_run):
    from henet_edge.henet_keras.datasets import recalibration_batches

    saved = json.loads((flip_run / "config.json").read_text())
    assert saved["train"]["augment"] == "flip" and saved["augment"] == "flip"
    run = Run.load(flip_run)
    source, train_set, _ = load_training_data(run.train_config)
    assert source.augment == "flip"
    sample = np.concatenate(recalibration_batches(train_set, DEFAULT, batch_size=8, seed=0,
                                                  augment=source.augment))
    o, size = DEFAULT.crop_offset(), DEFAULT.input_size
    centres = normalize(train_set.images[:, o:o + size, o:o + size], DEFAULT)
    for view in sample:  # each is some training image's centre crop or its mirror
        assert any(np.allclose(view, c) or np.allclose(view, c[:, ::-1]) for c in centres)


def test_a_run_without_the_option_keeps_the_datas_own(tiny_run):
    source, _, _ = load_training_data(Run.load(tiny_run).train_config)
    assert Run.load(tiny_run).train_config.augment is None and source.augment == "cifar"


def test_resume_with_another_augmentation_is_refused(flip_run, tmp_path):
    copy = killed_after_last_epoch(flip_run, tmp_path / "killed")
    before = (copy / "config.json").read_text()
    with pytest.raises(RunError, match=r"augment='flip', not 'cifar'"):
        train(TrainConfig(data=None, model=None, repeat=None, augment="cifar"), copy,
              resume=True, show_bar=False, echo=lambda _m: None)
    assert (copy / "config.json").read_text() == before


def test_an_unknown_augmentation_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(main, ["train", "--data", str(tmp_path), "--out",
                                       str(tmp_path / "r"), "--augment", "sideways"])
    assert result.exit_code == 2
    assert "'sideways' is not one of 'cifar', 'flip', 'none'" in result.output
    assert not (tmp_path / "r").exists()
