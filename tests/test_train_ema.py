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


def test_the_shipped_model_holds_the_average_not_the_raw_weights(ema_run):
    from henet_edge.henet_keras.ema import shipped_weights, uses_average

    run_dir, _ = ema_run
    checkpoint = _load(run_dir / "checkpoint.keras")
    assert uses_average(checkpoint)  # the average is saved with the optimiser state
    shipped = _load(run_dir / "model.keras").get_weights()
    averaged = shipped_weights(checkpoint)
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
    averaged = shipped_weights(_load(run / "checkpoint.keras"))
    for got, want in zip(_load(run / "model.keras").get_weights(), averaged, strict=True):
        np.testing.assert_array_equal(got, want)


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
