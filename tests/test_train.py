"""Training runs: artefacts, resume after kill -9, schedule, bad input, evaluate."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from henet_edge import HenetEdgeError
from henet_edge.cli import main
from henet_edge.henet_keras.recipes import RecipeSchedule
from henet_edge.henet_keras.train import RunError, TrainConfig, train

from .conftest import killed_after_last_epoch


def test_run_folder_artefacts(tiny_run):
    for name in ("model.keras", "best.keras", "checkpoint.keras", "config.json",
                 "history.json", "history.csv", "curves.png", "train.log", "summary.json"):
        assert (tiny_run / name).is_file(), name
    config = json.loads((tiny_run / "config.json").read_text())
    assert config["labels"] == ["blue", "green", "red"]
    assert config["preprocessing"]["input_size"] == 31
    assert config["train"]["seed"] == 0 and "tensorflow" in config["versions"]
    history = json.loads((tiny_run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert not list(tiny_run.glob(".*tmp*"))  # nothing half-written left behind


def test_saved_model_is_native_grouped_and_matches_training_weights(tiny_run):
    import keras

    from henet_edge.henet_keras import layers as _layers  # noqa: F401

    model = keras.models.load_model(tiny_run / "model.keras")
    kinds = {type(layer).__name__ for layer in model.layers}
    assert "MaskedGroupConv2D" not in kinds and "Conv2D" in kinds
    ckpt = keras.models.load_model(tiny_run / "checkpoint.keras")
    assert any(type(layer).__name__ == "MaskedGroupConv2D" for layer in ckpt.layers)
    x = np.random.default_rng(0).standard_normal((2, 31, 31, 3)).astype("float32")
    np.testing.assert_allclose(model(x, training=False), ckpt(x, training=False),
                               rtol=1e-4, atol=1e-4)


def test_refuses_nonempty_run_folder_and_finished_resume(tiny_run, image_folder):
    config = TrainConfig(data=str(image_folder), repeat=1, epochs=1, batch_size=8)
    with pytest.raises(RunError, match="not empty"):
        train(config, tiny_run, echo=lambda _m: None)
    with pytest.raises(RunError, match="already finished"):
        train(config, tiny_run, resume=True, echo=lambda _m: None)


def test_resume_from_another_model_is_refused(tiny_run, image_folder, tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.json").write_text((tiny_run / "config.json").read_text())
    config = TrainConfig(data=str(image_folder), model="shufflenet", repeat=1)
    with pytest.raises(RunError, match="model='henet'"):
        train(config, run, resume=True, echo=lambda _m: None)


def test_resume_refuses_every_setting_it_would_ignore(tiny_run, tmp_path):
    """--resume continues a run with its own settings: one given otherwise is refused,
    naming it, and nothing is changed (an --epochs 300 is not silently dropped)."""
    copy = killed_after_last_epoch(tiny_run, tmp_path / "killed")
    before = (copy / "config.json").read_text()
    for given, message in ((dict(epochs=300), "epochs=2, not 300"),
                           (dict(lr=0.5, batch_size=4), "batch_size=8, not 4; lr=None, not 0.5"),
                           (dict(seed=7), "seed=0, not 7"),
                           (dict(data=str(tmp_path)), "data=")):
        with pytest.raises(RunError, match=re.escape(message)):
            train(TrainConfig(**{"data": None, "model": None, "repeat": None, **given}), copy,
                  resume=True, echo=lambda _m: None)
    assert (copy / "config.json").read_text() == before
    # the run's own settings, stated again, are no difference
    from henet_edge.henet_keras.run import Run
    from henet_edge.henet_keras.run_folder import checked_config as _checked_config

    _checked_config(Run.load(copy).train_config, copy, resume=True)


def test_data_that_no_longer_gives_the_runs_split_is_refused(tiny_run, image_folder, tmp_path):
    """One image added moves the seeded split: a resume (or the run's validation set)
    would train on images it held out. Refused, naming the counts."""
    import json
    import shutil

    from henet_edge.henet_keras.run import Run

    data = tmp_path / "data"
    shutil.copytree(image_folder, data)
    first = sorted((data / "red").iterdir())[0]
    shutil.copy(first, data / "red" / f"extra{first.suffix}")
    copy = killed_after_last_epoch(tiny_run, tmp_path / "killed")
    config = json.loads((copy / "config.json").read_text())
    config["train"]["data"] = str(data)
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(RunError, match=r"no longer gives the run's split \(train 36 then, 37 now"):
        train(TrainConfig(data=None, model=None, repeat=None), copy, resume=True,
              echo=lambda _m: None)
    with pytest.raises(RunError, match="no longer gives the run's split"):
        Run.load(copy).validation()


def _cli(*args):
    return [sys.executable, "-m", "henet_edge.cli", *args]


def test_kill_minus_nine_then_resume_keeps_the_schedule(image_folder, tmp_path):
    run = tmp_path / "run"
    args = ["train", "--data", str(image_folder), "--out", str(run), "--repeat", "1",
            "--epochs", "3", "--batch-size", "4", "--seed", "1"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen(_cli(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=env)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        state = run / "state.json"
        if state.exists() and json.loads(state.read_text())["epochs_done"] >= 1:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = json.loads((run / "state.json").read_text())["epochs_done"]
    assert 1 <= done_before < 3
    assert not (run / "model.keras").exists()

    resumed = subprocess.run(_cli("train", "--resume", str(run), "--data", str(image_folder)),
                             capture_output=True, text=True, env=env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming after epoch {done_before}" in resumed.stdout
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]
    plan = json.loads((run / "config.json").read_text())["plan"]
    schedule = RecipeSchedule(plan["lr"], plan["total_steps"], plan["warmup_steps"],
                              plan["schedule"], tuple(plan["milestones"]))
    for row in history:  # the lr after each epoch is the schedule's value at that step
        assert row["step"] == row["epoch"] * plan["steps_per_epoch"]
        assert row["lr"] == pytest.approx(float(schedule(row["step"])), rel=1e-5)
    assert (run / "model.keras").exists()


def test_train_cli_bad_data_is_one_line(tmp_path):
    proc = subprocess.run(_cli("train", "--data", str(tmp_path / "nope"), "--out",
                               str(tmp_path / "r")), capture_output=True, text=True)
    assert proc.returncode == 1
    assert "no such file or folder" in proc.stderr and "Traceback" not in proc.stderr


def test_evaluate_run_and_keras_file(tiny_run, image_folder, tmp_path):
    plot = tmp_path / "cm.png"
    result = CliRunner().invoke(main, ["evaluate", str(tiny_run), "--json", "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    keras_result = data["models"]["keras"]
    assert keras_result["images"] == 12  # the run's own 25 % validation split
    assert data["data_source"] == {"kind": "validation split", "path": str(image_folder),
                                   "split": "seeded 25% split (seed 0)"}
    # the best model on the run's own validation split: what training measured as the best
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert keras_result["top1"] == pytest.approx(summary["best_val_accuracy"])
    assert keras_result["top5"] == 1.0  # 3 classes: every label is in the top 5
    assert set(keras_result["per_class"]) == {"blue", "green", "red"}
    assert data["mean_last5_val_accuracy"] == pytest.approx(summary["mean_last5_val_accuracy"])
    assert plot.stat().st_size > 1000
    result = CliRunner().invoke(main, ["evaluate", str(tiny_run / "model.keras"), "--data",
                                       str(image_folder), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["models"]["keras"]["images"] == 48
    assert data["data_source"] == {"kind": "images", "path": str(image_folder)}


def test_init_from_a_run_starts_from_its_weights(tiny_run, image_folder, tmp_path):
    import keras

    from henet_edge.henet_keras import layers as _layers  # noqa: F401

    config = TrainConfig(data=str(image_folder), repeat=1, epochs=1, batch_size=8,
                         val_split=0.25, seed=0, lr=1e-12, init_from=str(tiny_run))
    run = tmp_path / "more"
    train(config, run, show_bar=False, echo=lambda _m: None)
    assert "weights initialised from" in (run / "train.log").read_text()
    from henet_edge.henet_keras.run import Run

    assert Run.load(run).train_config.init_from == str(tiny_run)  # recorded, and found again
    before = keras.models.load_model(tiny_run / "model.keras")
    after = keras.models.load_model(run / "model.keras")
    for old, new in zip(before.layers, after.layers, strict=True):
        if type(old).__name__ == "Conv2D":  # lr ~0: conv weights stay those of the donor
            np.testing.assert_allclose(new.get_weights()[0], old.get_weights()[0], atol=1e-6)


def test_init_from_a_run_with_another_split_is_refused(tiny_run, image_folder, tmp_path):
    config = TrainConfig(data=str(image_folder), repeat=1, epochs=1, batch_size=8,
                         val_split=0.25, seed=1, init_from=str(tiny_run))
    with pytest.raises(RunError, match=r"different seed.*validation images"):
        train(config, tmp_path / "leaky", show_bar=False, echo=lambda _m: None)
    assert not (tmp_path / "leaky").exists()  # refused before the run folder was made
    for name in ("model.keras", "best.keras"):  # a file of that run: the same check
        leaky = TrainConfig(data=str(image_folder), repeat=1, epochs=1, batch_size=8,
                            val_split=0.25, seed=1, init_from=str(tiny_run / name))
        with pytest.raises(RunError, match=r"different seed.*validation images"):
            train(leaky, tmp_path / "leaky", show_bar=False, echo=lambda _m: None)
    bare = tmp_path / "bare.keras"  # no run beside it: nothing to check it against
    bare.write_bytes((tiny_run / "model.keras").read_bytes())
    other = TrainConfig(data=str(image_folder), repeat=2, epochs=1, batch_size=8,
                        val_split=0.25, seed=0, init_from=str(bare))
    with pytest.raises(RunError, match="architecture does not match"):
        train(other, tmp_path / "mismatch", show_bar=False, echo=lambda _m: None)


@pytest.mark.parametrize("option, value", [("--repeat", "0"), ("--epochs", "0"),
                                           ("--iterations", "0"), ("--batch-size", "0"),
                                           ("--limit", "0"), ("--epochs", "-2"),
                                           ("--lr", "0"), ("--width", "0"),
                                           ("--weight-decay", "-0.5")])
def test_train_refuses_zero_and_negative_sizes(image_folder, tmp_path, option, value):
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--data", str(image_folder), "--out", str(run),
                                       option, value])
    assert result.exit_code != 0
    assert f"{option} must be" in result.output and f"got {value}" in result.output
    assert "Traceback" not in result.output
    assert not run.exists()


def test_explicit_recipe_values_are_kept_and_none_takes_the_recipe():
    from henet_edge.henet_keras.train import _plan

    assert _plan(TrainConfig(data="x"), 1280)["epochs"] == 30
    assert _plan(TrainConfig(data="x", epochs=1), 1280)["epochs"] == 1
    plan = _plan(TrainConfig(data="x", recipe="paper"), 1280)
    assert plan["total_steps"] == 65_000 and plan["batch_size"] == 128
    assert plan["weight_decay"] == 5e-4
    assert _plan(TrainConfig(data="x", weight_decay=1e-4), 1280)["weight_decay"] == 1e-4
    assert _plan(TrainConfig(data="x", weight_decay=0.0), 1280)["weight_decay"] == 0.0


def test_a_short_run_warms_up_for_a_quarter_of_it_at_most():
    # fast's 2 warm-up epochs took all of a 2-epoch run: it ended at its peak rate.
    from henet_edge.henet_keras.train import _plan

    short = _plan(TrainConfig(data="x", epochs=2), 1280)  # 10 steps an epoch
    assert (short["total_steps"], short["warmup_steps"]) == (20, 5)
    for epochs in (10, 30, 200):  # every run the default model came from: 2 epochs, as before
        assert _plan(TrainConfig(data="x", epochs=epochs), 1280)["warmup_steps"] == 20


def test_counts_in_the_train_log_agree_in_number():
    from henet_edge.henet_keras.train import plural

    assert plural(1, "epoch") == "1 epoch"
    assert plural(30, "epoch") == "30 epochs"
    assert plural(0, "step") == "0 steps"


def test_a_run_killed_after_its_last_epoch_is_finished_by_resume(tiny_run, tmp_path):
    """Killed between the last epoch's checkpoint and the final models: resume writes them."""
    from henet_edge.henet_keras.run import Run

    run = killed_after_last_epoch(tiny_run, tmp_path / "killed")
    config = Run.load(run).train_config  # its settings, paths resolved
    lines: list[str] = []
    summary = train(config, run, resume=True, show_bar=False, echo=lines.append)
    assert any("all 2 epochs are done; writing the final models" in line for line in lines)
    assert summary["finished"] and summary["epochs"] == 2
    assert (run / "model.keras").is_file() and (run / "best.keras").is_file()
    assert json.loads((run / "state.json").read_text())["finished"] is True


def test_a_run_being_trained_is_not_trained_twice(tiny_run, image_folder, tmp_path):
    """Two trains of one folder (two resumes, or two starts with one --out) both trained,
    both exited 0, and the last to write won the checkpoint, history and models."""
    import fcntl

    from henet_edge.henet_keras.run import LOCK, Run

    run = killed_after_last_epoch(tiny_run, tmp_path / "killed")
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    for folder in (run, fresh):
        with open(folder / LOCK, "a+") as held:  # a train of the folder is running
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held.write("train (pid 4242)")
            held.flush()
            before = sorted(p.name for p in folder.iterdir())
            with pytest.raises(RunError, match=re.escape("train (pid 4242) is training")):
                if folder == run:
                    train(Run.load(run).train_config, run, resume=True, show_bar=False,
                          echo=lambda _m: None)
                else:
                    train(TrainConfig(data=str(image_folder), repeat=1, epochs=1,
                                      batch_size=8), fresh, echo=lambda _m: None)
            assert sorted(p.name for p in folder.iterdir()) == before  # nothing written
    summary = train(Run.load(run).train_config, run, resume=True, show_bar=False,
                    echo=lambda _m: None)  # the lock is free again
    assert summary["finished"]


def test_seed_fixes_the_initial_weights(image_folder, tmp_path):
    """--seed fixed the split, order and augmentation but not the initial weights, so two
    runs of one config differed from their first epoch."""
    import keras

    def first_weights(name: str, seed: int) -> list[np.ndarray]:
        config = TrainConfig(data=str(image_folder), repeat=1, epochs=1, batch_size=8,
                             limit=16, seed=seed)
        train(config, tmp_path / name, show_bar=False, echo=lambda _m: None)
        return keras.models.load_model(tmp_path / name / "model.keras").get_weights()

    a, b, c = first_weights("a", 0), first_weights("b", 0), first_weights("c", 1)
    # (close, not equal: threaded float sums may round differently from run to run)
    assert all(np.allclose(x, y, atol=1e-4) for x, y in zip(a, b, strict=True))
    assert not all(np.allclose(x, y, atol=1e-2) for x, y in zip(a, c, strict=True))


def _one_class_folder(root):
    from tests.conftest import write_image_folder

    write_image_folder(root, per_class=4)
    for name in ("green", "blue"):
        for f in (root / name).iterdir():
            f.unlink()
        (root / name).rmdir()
    return root


@pytest.mark.parametrize("bad", ["missing", "one class", "empty"])
def test_a_start_that_fails_before_its_first_epoch_leaves_nothing(tmp_path, bad):
    data = {"missing": tmp_path / "nope", "empty": tmp_path / "empty",
            "one class": _one_class_folder(tmp_path / "one")}[bad]
    if bad == "empty":
        data.mkdir()
    run = tmp_path / "runs" / "r"
    config = TrainConfig(data=str(data), repeat=1, epochs=1, batch_size=2)
    with pytest.raises(HenetEdgeError):
        train(config, run, show_bar=False, echo=lambda _m: None)
    assert not (tmp_path / "runs").exists()  # the folders it made are gone too
    run.mkdir(parents=True)  # an empty folder the user made stays, and stays empty
    with pytest.raises(HenetEdgeError):
        train(config, run, show_bar=False, echo=lambda _m: None)
    assert run.is_dir() and list(run.iterdir()) == []


def test_a_run_records_absolute_paths(image_folder, tmp_path, monkeypatch):
    from henet_edge.henet_keras.run_folder import checked_config as _checked_config

    monkeypatch.chdir(image_folder.parent)
    config = _checked_config(TrainConfig(data=image_folder.name), tmp_path / "r", False)
    assert config.data == str(image_folder)
    named = _checked_config(TrainConfig(data="cifar10"), tmp_path / "r", False)
    assert named.data == "cifar10"


@pytest.mark.parametrize("kill_at", ["weights", "checkpoint", "rename", "state"])
def test_best_weights_are_always_the_best_epoch_the_history_keeps(tmp_path, monkeypatch,
                                                                   kill_at):
    """A kill between any two of an epoch's writes (epoch 2, a new best): after resume,
    best.weights.npz holds the best epoch of the kept history, never another's."""
    import os

    import numpy as np

    from henet_edge.henet_keras import epochs

    class Killed(BaseException):
        pass

    def weights(model, _batches):  # the best's weights (with --ema: recomputed, slow)
        if kill_at == "weights" and model == "epoch 2":
            raise Killed
        return [np.array([model])]

    def save_model(model, path):
        if kill_at == "checkpoint" and model == "epoch 2":
            raise Killed
        path.write_text(model)

    real_replace = os.replace

    def replace(src, dst):
        if kill_at == "rename" and str(src).endswith("/best.weights.epoch2.npz"):
            raise Killed
        real_replace(src, dst)

    def write_state(path, text):
        if kill_at == "state" and '"epochs_done": 2' in text:
            raise Killed
        path.write_text(text)

    monkeypatch.setattr(epochs, "save_model_atomic", save_model)
    monkeypatch.setattr(epochs, "shipped_weights", weights)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(epochs, "write_text_atomic", write_state)
    monkeypatch.setattr(epochs, "write_history", lambda *_a: None)
    saver = epochs._Checkpointer(tmp_path, [], 0.0)
    saver.save("epoch 1", {"epoch": 1, "val_accuracy": 0.5})
    with pytest.raises(Killed):
        saver.save("epoch 2", {"epoch": 2, "val_accuracy": 0.6})
    monkeypatch.setattr(os, "replace", real_replace)
    # resume: the checkpoint's step count says which epochs are kept; each was a new best
    kept = int((tmp_path / "checkpoint.keras").read_text().split()[-1])
    epochs.settle_best_weights(tmp_path, kept)
    with np.load(tmp_path / "best.weights.npz") as z:
        assert str(z["w0"][0]) == f"epoch {kept}"
    assert not list(tmp_path.glob("best.weights.epoch*"))
