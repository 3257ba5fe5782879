"""The Run type: one reader of run folders, old relative data paths included."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from henet_edge.henet_keras.run import (
    Run,
    RunError,
    hours_left,
    load_runs_on_one_split,
    mean_of_last,
)


def _history(*accuracies):
    return [{"epoch": i + 1, "val_accuracy": a} for i, a in enumerate(accuracies)]


def test_mean_of_the_last_five():
    assert mean_of_last(_history(0.0, 0.0, 0.5, 0.5, 0.5, 0.5, 1.0)) == pytest.approx(0.6)
    assert mean_of_last(_history(0.2, 0.4)) == pytest.approx(0.3)
    assert mean_of_last([]) is None


def test_a_run_folder_is_read_in_one_place(tiny_run, image_folder):
    run = Run.load(tiny_run)
    assert run.labels == ["blue", "green", "red"]
    assert run.model_path() == tiny_run / "best.keras" and run.finished
    assert [h["epoch"] for h in run.history] == [1, 2]
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert run.mean_last5() == pytest.approx(summary["mean_last5_val_accuracy"])
    assert run.data_path == str(image_folder)
    val, note = run.validation()
    assert len(val) == 12 and "25% split (seed 0)" in note


def test_not_a_run_folder(tmp_path):
    with pytest.raises(RunError, match="not a run folder"):
        Run.load(tmp_path)
    (tmp_path / "config.json").write_text("{oops")
    with pytest.raises(RunError, match="cannot be read as JSON"):
        Run.load(tmp_path)


def _old_style_run(tiny_run, image_folder, project, run_dir_as_given):
    """A copy of ``tiny_run`` as older versions wrote it: the data path as given."""
    run = project / "runs" / "tiny"
    shutil.copytree(tiny_run, run)
    shutil.copytree(image_folder, project / "tiny")
    config = json.loads((run / "config.json").read_text())
    config["train"]["data"] = "tiny"
    config.pop("paths")  # older versions did not say what paths were relative to
    (run / "config.json").write_text(json.dumps(config))
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "run_dir": run_dir_as_given}))
    return run


def test_an_old_relative_data_path_is_found_where_the_run_was_made(tiny_run, image_folder,
                                                                   tmp_path, monkeypatch):
    from henet_edge.convert.evaluate import evaluate_model

    project = tmp_path / "project"
    run = _old_style_run(tiny_run, image_folder, project, "runs/tiny")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "tiny").mkdir(parents=True)  # a decoy of the same name where we stand
    monkeypatch.chdir(elsewhere)
    assert Run.load(run).data_path == str(project / "tiny")
    result = evaluate_model(run)  # from another folder: the run's own validation split
    assert result["models"]["keras"]["images"] == 12


def test_a_run_names_its_data_relative_to_itself_and_moves_with_it(tiny_run, image_folder,
                                                                   tmp_path, monkeypatch):
    text = (tiny_run / "config.json").read_text()
    config = json.loads(text)
    assert config["paths"] == "relative to the run folder"
    assert not os.path.isabs(config["train"]["data"])
    assert str(image_folder) not in text and str(tiny_run.parent) not in text
    assert str(tiny_run.parent) not in (tiny_run / "train.log").read_text()
    # Move the run and its data together: the run still finds its data, from anywhere.
    moved = tmp_path / "moved"
    relative = os.path.relpath(image_folder, tiny_run)
    run_copy = moved / "a" / "b" / "run"
    shutil.copytree(tiny_run, run_copy)
    shutil.copytree(image_folder, os.path.normpath(run_copy / relative))
    monkeypatch.chdir(tmp_path)
    assert Run.load(run_copy).data_path == os.path.normpath(run_copy / relative)
    assert Path(Run.load(run_copy).data_path).is_dir()


def test_a_shufflenet_run_that_recorded_an_ignored_width_still_loads(tiny_run, tmp_path):
    """Older `train --model shufflenet --width 2` recorded 2.0 for a width-1 model."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    config = json.loads((run / "config.json").read_text())
    config["train"].update(model="shufflenet", width_multiplier=2.0)
    (run / "config.json").write_text(json.dumps(config))
    assert Run.load(run).train_config.width_multiplier == 1.0


def test_runs_scored_side_by_side_must_hold_out_the_same_images(tiny_run, tmp_path):
    same, other = tmp_path / "same", tmp_path / "other"
    shutil.copytree(tiny_run, same)
    shutil.copytree(tiny_run, other)
    config = json.loads((other / "config.json").read_text())
    config["train"]["seed"] = 1
    (other / "config.json").write_text(json.dumps(config))
    assert [r.root for r in load_runs_on_one_split([tiny_run, same])] == [tiny_run, same]
    with pytest.raises(RunError, match=r"other held out other images than .*tiny: seed \(1\)"):
        load_runs_on_one_split([tiny_run, same, other])


def test_hours_left_go_by_the_recent_pace_without_pauses():
    seconds = [900, 200, 500, 100, 100, 100]  # the third epoch was stopped for 400 s
    history = [{"seconds": s, "paused_seconds": 400 if i == 2 else 0.0}
               for i, s in enumerate(seconds)]
    assert hours_left(history, 10) == pytest.approx(4 * 100 / 3600)  # median of the last 5
    assert hours_left(history, 6) == 0
    assert hours_left(history, None) is None and hours_left([], 10) is None


def test_a_run_whose_data_is_not_here_says_so(tiny_run, tmp_path):
    """From a checkout laid out otherwise, a committed run's validation split failed with
    a bare 'no such file' naming a path the user never typed."""
    import json
    import shutil

    from henet_edge.henet_keras.run import Run, RunError

    moved = tmp_path / "deep" / "run"
    shutil.copytree(tiny_run, moved)
    config = json.loads((moved / "config.json").read_text())
    config["train"]["data"] = "../../elsewhere/data"  # relative to the run, as recorded
    (moved / "config.json").write_text(json.dumps(config))
    with pytest.raises(RunError, match=r"the run's data .*elsewhere/data is not here"):
        Run.load(moved).validation()
