"""Runs side by side (``benchmarks/runs_table.py``): figures read from each run's own files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from henet_edge.henet_keras.run import Run
from henet_edge.henet_keras.run_table import markdown, plot_runs, run_row

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "runs_table.py"


def test_a_finished_run_reports_its_history(tiny_run):
    row = run_row(Run.load(tiny_run))
    scores = [h["val_accuracy"] for h in Run.load(tiny_run).history]
    assert row["model"] == "henet-r1" and row["finished"] and row["epochs"] == 2
    assert row["best"] == max(scores) and row["final"] == scores[-1]
    assert row["mean_last5"] == pytest.approx(np.mean(scores))
    assert row["raw_mean_last5"] is None and row["teachers"] == 0
    assert scores[row["best_epoch"] - 1] == row["best"]
    assert f"| {100 * scores[-1]:.2f} % |" in markdown([row])


def averaged_copy(tiny_run: Path, folder: Path) -> tuple[Path, list[dict]]:
    """``tiny_run`` as if trained with ``--ema``: raw weights' top-1 0.25, 0.75."""
    copy = folder / "ema"
    shutil.copytree(tiny_run, copy)
    history = json.loads((copy / "history.json").read_text())
    for i, h in enumerate(history):
        h["raw_val_accuracy"], h["paused_seconds"] = 0.25 + 0.5 * i, h["seconds"] / 2
    (copy / "history.json").write_text(json.dumps(history))
    return copy, history


def test_an_unfinished_averaged_run_shows_its_progress_and_raw_control(tiny_run, tmp_path):
    copy, history = averaged_copy(tiny_run, tmp_path)
    state = json.loads((copy / "state.json").read_text())
    (copy / "state.json").write_text(json.dumps({**state, "finished": False}))
    config = json.loads((copy / "config.json").read_text())
    config["plan"]["epochs"] = 5
    (copy / "config.json").write_text(json.dumps(config))
    row = run_row(Run.load(copy))
    assert row["raw_mean_last5"] == pytest.approx(0.5)
    assert row["train_hours"] == pytest.approx(sum(h["seconds"] for h in history) / 2 / 3600)
    assert "| 2/5 |" in markdown([row])


def test_the_script_prints_json_and_refuses_a_folder_that_is_no_run(tiny_run, tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), str(tiny_run), "--json"],
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out)[0]["epochs"] == 2
    bad = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "not a run folder" in bad.stderr


def test_the_plot_draws_each_run_and_an_averaged_runs_raw_weights(tiny_run, tmp_path):
    copy, _ = averaged_copy(tiny_run, tmp_path)
    png = tmp_path / "curves.png"
    labels = plot_runs([Run.load(tiny_run), Run.load(copy)], png)
    assert labels == ["tiny", "ema", "ema (raw weights)"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_runs([Run.load(copy)], png, from_epoch=3) == ["ema"]  # no epoch left to draw


def test_the_script_draws_the_plot_it_is_asked_for(tiny_run, tmp_path):
    png = tmp_path / "sub" / "curves.png"
    png.parent.mkdir()
    out = subprocess.run([sys.executable, str(SCRIPT), str(tiny_run), "--plot", str(png),
                          "--from-epoch", "2"], capture_output=True, text=True, check=True)
    assert f"plot: {png}" in out.stdout and png.stat().st_size > 0
