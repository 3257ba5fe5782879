"""The equal-budget campaign: a resumable queue of run folders with one shared recipe."""

from __future__ import annotations

import hashlib
import json

import pytest

from henet_edge.henet_keras.campaign import Campaign, check_campaign, run_campaign
from henet_edge.henet_keras.train import RunError


def _campaign(root, data, **kw) -> Campaign:
    settings = {"epochs": 2, "batch_size": 8, "val_split": 0.25,
                "models": (("henet", 1), ("shufflenet", 1))} | kw
    return Campaign(root=root, data=str(data), **settings)


def _digest(folder) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def finished(image_folder, tmp_path_factory):
    root = tmp_path_factory.mktemp("campaign")
    run_campaign(_campaign(root, image_folder), echo=lambda _m: None, show_bar=False)
    return root


def test_every_model_is_an_ordinary_finished_run_with_the_shared_recipe(finished, image_folder):
    for name, family in (("henet-r1", "henet"), ("shufflenet-r1", "shufflenet")):
        run = finished / name
        for f in ("config.json", "history.json", "curves.png", "train.log", "model.keras"):
            assert (run / f).is_file(), (name, f)
        train = json.loads((run / "config.json").read_text())["train"]
        assert (train["model"], train["repeat"], train["epochs"]) == (family, 1, 2)
    rows = check_campaign(_campaign(finished, image_folder))
    assert [r["state"] for r in rows] == ["finished", "finished"]


def test_running_again_skips_finished_runs(finished, image_folder):
    before = _digest(finished / "henet-r1")
    said = []
    run_campaign(_campaign(finished, image_folder), echo=said.append, show_bar=False)
    assert said == ["henet-r1: finished, skipped", "shufflenet-r1: finished, skipped"]
    assert _digest(finished / "henet-r1") == before


@pytest.mark.parametrize(("change", "named"), [
    ({"epochs": 3}, "epochs: run has 2, campaign wants 3"),
    ({"seed": 1}, "seed: run has 0, campaign wants 1"),
    ({"recipe": "paper"}, "recipe: run has 'fast', campaign wants 'paper'"),
    ({"val_split": 0.5}, "val_split: run has 0.25, campaign wants 0.5"),
])
def test_other_settings_are_refused_naming_the_difference(finished, image_folder, change, named):
    before = {p.name: _digest(p) for p in finished.iterdir()}
    with pytest.raises(RunError, match="other settings") as err:
        run_campaign(_campaign(finished, image_folder, **change), echo=lambda _m: None)
    assert named in str(err.value)
    assert {p.name: _digest(p) for p in finished.iterdir()} == before


def test_a_folder_that_is_not_a_run_is_refused(image_folder, tmp_path):
    (tmp_path / "henet-r1").mkdir()
    (tmp_path / "henet-r1" / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="not a run folder"):
        run_campaign(_campaign(tmp_path, image_folder), echo=lambda _m: None)
    assert (tmp_path / "henet-r1" / "notes.txt").read_text() == "mine"


class _Killed(BaseException):
    pass


def test_a_killed_checkpoint_save_resumes_from_the_last_complete_checkpoint(image_folder,
                                                                            tmp_path):
    campaign = _campaign(tmp_path, image_folder, epochs=3, models=(("henet", 1),))

    def die_after_first_epoch(message: str) -> None:
        if message.startswith("epoch 1/3"):
            raise _Killed

    with pytest.raises(_Killed):
        run_campaign(campaign, echo=die_after_first_epoch, show_bar=False)
    run = tmp_path / "henet-r1"
    # What a kill in the middle of the next epoch's writes leaves: a partial save under its
    # temporary name, and state.json one epoch behind the checkpoint.
    (run / ".checkpoint.tmp.keras").write_bytes(b"PK\x03\x04 truncated")
    (run / "state.json").write_text(json.dumps({"epochs_done": 0, "best_val_accuracy": 0.0,
                                                "finished": False}))
    said = []
    run_campaign(campaign, echo=said.append, show_bar=False)
    assert "henet-r1: resuming" in said
    assert any(m.startswith("resuming after epoch 1 ") for m in said), said
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert not list(run.glob(".*tmp*"))
    assert json.loads((run / "state.json").read_text())["finished"] is True
