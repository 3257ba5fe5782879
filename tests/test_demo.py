"""`henet-edge demo`: convert, local deploy through the installer, bench, classify."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from henet_edge.cli import main
from henet_edge.deploy.demo import DemoError, check_core_free


def test_demo_end_to_end_on_a_local_target(tiny_run, image_folder, tmp_path):
    target = tmp_path / "pi"
    calib = tmp_path / "calib.npz"
    made = CliRunner().invoke(main, ["calibrate", "--data", str(image_folder), "--num", "12",
                                     "--out", str(calib)])
    assert made.exit_code == 0, made.output
    result = CliRunner().invoke(main, [
        "demo", "--model", str(tiny_run), "--calibration", str(calib), "--target",
        str(target), "--quick", "--core", "0", "--no-gate", "--lowering", "dense", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{\n"):])
    assert set(summary["latency"]) == {"int8", "float32"}
    assert summary["latency"]["int8"]["time_s"] > 0 and summary["speedup_int8"] > 0
    assert summary["selftest"]["passed"] is True
    assert summary["runs"] == 100 and summary["repeats"] == 2
    assert len(summary["classified"]) == 6  # 3 golden images x 2 precisions
    assert all(c["ok"] for c in summary["classified"])
    # the target is laid out exactly like a device
    current = target / "current"
    assert current.is_symlink()
    assert os.readlink(current).startswith("bundles/")
    assert json.loads((current / "manifest.json").read_text())["lowering"] == "dense"


def test_demo_refuses_when_no_core_is_free(monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 9.0, 9.0))
    with pytest.raises(DemoError, match="no free core"):
        check_core_free(None)
    assert check_core_free(0) == 0  # an explicit core is the user's choice


def test_demo_without_a_default_model_says_what_to_pass(monkeypatch, tmp_path):
    import henet_edge.deploy.demo as demo

    monkeypatch.setattr(demo, "DEFAULT_BUNDLE", tmp_path / "none")
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    result = CliRunner().invoke(main, ["demo", "--quick"])
    assert result.exit_code == 1
    assert "pass --model" in result.output


def _demo_subprocess(args, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "henet_edge.cli", "demo", *args],
                          capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("where", ["sys", "chmod"])
def test_demo_refuses_a_target_it_cannot_write_before_converting(tiny_run, tmp_path, where):
    if where == "sys":  # sysfs refuses new folders even to root
        target = Path("/sys/henet-edge-demo-target")
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes in a read-only folder")
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        target = locked / "pi"
    proc = _demo_subprocess(["--model", str(tiny_run), "--target", str(target), "--quick",
                             "--core", "0"])
    assert proc.returncode == 1
    assert "cannot write" in proc.stderr and "--target" in proc.stderr
    assert "convert" not in proc.stdout  # refused before any slow work
    assert "Traceback" not in proc.stderr


def test_demo_refuses_a_target_holding_other_files_before_converting(tiny_run, tmp_path):
    """It used to convert first and then fail in the installer, naming --remote-dir."""
    target = tmp_path / "photos"
    target.mkdir()
    (target / "holiday.jpg").write_bytes(b"mine")
    proc = _demo_subprocess(["--model", str(tiny_run), "--target", str(target), "--quick",
                             "--core", "0"])
    assert proc.returncode == 1
    assert f"--target {target} is not empty and was not made by henet-edge (it holds " \
           "holiday.jpg)" in proc.stderr
    assert "convert" not in proc.stdout and "--remote-dir" not in proc.stderr
    assert sorted(p.name for p in target.iterdir()) == ["holiday.jpg"]


def test_demo_without_a_device_runtime_says_what_to_install(tiny_run, tmp_path):
    blocked = tmp_path / "blocked"
    for name in ("ai_edge_litert", "tflite_runtime"):
        (blocked / name).mkdir(parents=True)
        (blocked / name / "__init__.py").write_text(
            f"raise ImportError('{name} is not installed (test)')\n")
    proc = _demo_subprocess(["--model", str(tiny_run), "--quick", "--core", "0"],
                            {"PYTHONPATH": str(blocked)})
    assert proc.returncode == 1
    assert "no device runtime" in proc.stderr and "pip install ai-edge-litert" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_demo_on_the_shipped_default_model(tmp_path):
    from henet_edge.device.classify import DEFAULT_BUNDLE

    if not (DEFAULT_BUNDLE / "source" / "model.keras").is_file():
        pytest.skip("this install ships no default model")
    result = CliRunner().invoke(main, ["demo", "--quick", "--core", "0", "--target",
                                       str(tmp_path / "pi"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{\n"):])
    report = summary["report"]
    assert "held-out" in report["data"] and report["images"] == 1000
    assert report["int8_top1"] > 0.8 and report["float32_top1"] > 0.8
    # each golden image gets the label the desktop recorded for it, in each precision
    installed = tmp_path / "pi" / "current"
    golden = json.loads((installed / "golden.json").read_text())["images"]
    labels = (installed / "labels.txt").read_text().splitlines()
    expected = {(Path(g["file"]).name, p): labels[g[p]["top1"]] for g in golden
                for p in ("int8", "float32")}
    got = {(Path(c["path"]).name, c["precision"]): c["top"][0]["label"]
           for c in summary["classified"]}
    assert got == expected
    assert all(c["ok"] for c in summary["classified"])


def test_the_summary_counts_right_answers_not_only_readable_images():
    from henet_edge.deploy.demo import classified_line, selftest_phrase

    def result(precision, name, label, truth):
        return {"precision": precision, "path": f"/x/golden/{name}", "ok": True,
                "top": [{"label": label, "probability": 0.9}], "truth": truth}

    rows = [result(p, f"{i}.png", "bird", truth) for p in ("int8", "float32")
            for i, truth in enumerate(["airplane", "bird", "cat"])]
    line = classified_line(rows)
    assert line.startswith("classified 3 sample images x 2 precisions; "
                           "top-1 right: int8 1/3, float32 1/3; e.g. 0.png -> bird")
    assert selftest_phrase("int8 8/8, float32 8/8") == (
        "the converter's outputs reproduced on int8 8/8, float32 8/8 golden images")
    assert selftest_phrase("skipped") == "skipped"
