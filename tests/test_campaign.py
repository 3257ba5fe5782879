"""The equal-budget campaign: a resumable queue of run folders with one shared recipe."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from henet_edge.henet_keras.campaign import (
    CAMPAIGN_MODELS,
    Campaign,
    check_campaign,
    run_campaign,
)
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
    assert [(r["epochs_done"], r["epochs"]) for r in rows] == [(2, 2), (2, 2)]
    history = json.loads((finished / "henet-r1" / "history.json").read_text())
    assert rows[0]["best_val_accuracy"] == max(h["val_accuracy"] for h in history)
    assert [r["hours_left"] for r in rows] == [0, 0]  # nothing left of a finished run


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


@pytest.mark.parametrize("key, value, named", [
    ("ema", 0.999, r"ema: run has 0\.999, campaign wants None"),
    # Saved relative to the run folder, named resolved: <root>/c/henet-r1/../teacher.
    ("teachers", ["../teacher"], r"teachers: run has \['/[^']*/c/teacher'\], campaign wants None"),
])
def test_a_run_trained_with_a_weight_average_or_teachers_is_not_the_campaigns(
        finished, image_folder, tmp_path, key, value, named):
    import shutil

    root = tmp_path / "c"
    shutil.copytree(finished, root)
    config = json.loads((root / "henet-r1" / "config.json").read_text())
    config["train"][key] = value
    (root / "henet-r1" / "config.json").write_text(json.dumps(config))
    with pytest.raises(RunError, match=named):
        check_campaign(_campaign(root, image_folder))


def test_a_run_saved_before_a_setting_existed_counts_as_its_default(finished, image_folder):
    """Configs written before --mixup and --teacher-flip lack them; they trained without."""
    import shutil

    root = finished.parent / f"{finished.name}-older"  # a sibling: its data paths still hold
    shutil.copytree(finished, root)
    path = root / "henet-r1" / "config.json"
    config = json.loads(path.read_text())
    for key in ("mixup", "teacher_flip"):
        del config["train"][key]
    path.write_text(json.dumps(config))
    rows = check_campaign(_campaign(root, image_folder))
    assert [r["state"] for r in rows] == ["finished", "finished"]


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
    (row,) = check_campaign(campaign)
    assert (row["state"], row["epochs_done"], row["epochs"]) == ("partial", 1, 3)
    assert row["hours_left"] > 0  # two epochs at the first one's pace
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


def test_report_scores_both_precisions_times_them_together_and_plots(finished, image_folder):
    from henet_edge.convert.campaign_report import (
        build_report,
        plot_accuracy_latency,
        score_runs,
    )
    from henet_edge.device.bench import BenchOptions

    campaign = _campaign(finished, image_folder)
    assert score_runs(campaign, finished, calibration_images=12,
                      log=lambda _m: None) == ["henet-r1", "shufflenet-r1"]
    assert score_runs(campaign, finished, log=lambda _m: None) == []  # already scored
    calib = np.load(finished / "calibration.npz")
    provenance = json.loads(str(calib["provenance"]))
    assert "training split" in provenance["source"] and len(calib["labels"]) == 12
    report = build_report(campaign, finished, BenchOptions(runs=3, repeats=1, warmup=1,
                                                           precision="all"),
                          log=lambda _m: None)
    rows = {r["model"]: r for r in report["rows"]}
    assert set(rows) == {"henet-r1", "shufflenet-r1"} and report["left_out"] == []
    for r in rows.values():
        bundle_report = json.loads((finished / "bundles" / r["model"] / "report.json")
                                   .read_text())
        assert r["accuracy"]["int8"] == bundle_report["int8"]["top1"]
        assert r["validation_images"] == 12  # the run's own 25 % validation split
        assert all(r["latency_ms"][p] > 0 for p in ("float32", "int8"))
    assert rows["henet-r1"]["macs"] != rows["shufflenet-r1"]["macs"]
    import keras

    for name, r in rows.items():  # counted as trained: 3 classes, not CIFAR-10's 10
        trained = keras.models.load_model(finished / name / "model.keras", compile=False)
        assert r["params"] == sum(int(np.prod(w.shape)) for w in trained.trainable_weights)
    queued_otherwise = _campaign(finished, image_folder,
                                 models=(("shufflenet", 1), ("henet", 1)))
    reordered = build_report(queued_otherwise, finished,
                             BenchOptions(runs=3, repeats=1, warmup=1, precision="all"),
                             log=lambda _m: None)
    assert [r["model"] for r in reordered["rows"]] == ["henet-r1", "shufflenet-r1"]
    assert [p.name for p in plot_accuracy_latency(report, finished)] == [
        "accuracy-latency-float32.png", "accuracy-latency-int8.png"]


def test_another_lowering_is_a_report_of_its_own(finished, image_folder):
    from henet_edge.convert.campaign_report import build_report, score_runs
    from henet_edge.device.bench import BenchOptions

    campaign = _campaign(finished, image_folder, models=(("henet", 1),))
    before = {p.name: _digest(p) for p in (finished / "bundles").iterdir()} \
        if (finished / "bundles").is_dir() else {}
    assert score_runs(campaign, finished, calibration_images=12, lowering="dense",
                      log=lambda _m: None) == ["henet-r1"]
    manifest = json.loads((finished / "bundles-dense" / "henet-r1" / "manifest.json")
                          .read_text())
    assert manifest["lowering"] == "dense"  # the bundle records how it was lowered
    report = build_report(campaign, finished, BenchOptions(runs=3, repeats=1, warmup=1,
                                                           precision="all"),
                          lowering="dense", log=lambda _m: None)
    assert report["lowering"] == "dense" and [r["model"] for r in report["rows"]] == [
        "henet-r1"]
    assert report["rows"][0]["files"]["int8"].endswith("bundles-dense/henet-r1/model_int8.tflite")
    after = {p.name: _digest(p) for p in (finished / "bundles").iterdir()} \
        if (finished / "bundles").is_dir() else {}
    assert after == before  # the default lowering's bundles are untouched


def test_pareto_front_and_dominance_on_known_points():
    from henet_edge.convert.campaign_report import dominance, pareto_front

    assert pareto_front([(1.0, 80), (2.0, 79), (3.0, 85), (0.5, 70)]) == [
        (0.5, 70), (1.0, 80), (3.0, 85)]

    def row(family, repeat, acc, ms):
        return {"family": family, "repeat": repeat, "model": f"{family}-r{repeat}",
                "accuracy": {"int8": acc}, "latency_ms": {"int8": ms}}

    rows = [row("henet", 2, 0.88, 0.14), row("henet", 3, 0.89, 0.20),
            row("shufflenet", 3, 0.87, 0.19), row("shufflenet", 5, 0.895, 0.31)]
    answer = dominance(rows, "int8")
    assert answer["equal_repeat"][0]["henet_more_accurate"] is True
    assert answer["equal_repeat"][0]["henet_faster"] is False  # 0.20 ms against 0.19 ms
    assert answer["equal_accuracy"][0]["henet"] == "henet-r2"  # 88 % >= 87 %, fastest
    assert answer["equal_accuracy"][1]["henet"] is None  # nothing reaches 89.5 %
    assert answer["henet_dominates"] is False


@pytest.mark.parametrize("models", ["henet-rx", "henet-r9", "vgg"])
def test_the_campaign_script_refuses_an_unknown_model_with_its_usage(models, tmp_path):
    import subprocess
    import sys

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "equal_budget.py"
    proc = subprocess.run([sys.executable, str(script), "status", "--root", str(tmp_path),
                           "--models", models], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"Error: unknown model {models!r}; choose from " + ", ".join(
            f"{f}-r{r}" for f, r in CAMPAIGN_MODELS))
    assert "Usage:" in proc.stderr and proc.stdout == ""
    assert list(tmp_path.iterdir()) == []
