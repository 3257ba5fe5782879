"""``henet-edge doctor``: each check, its fix, and the exit code."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from henet_edge.cli import main
from henet_edge.device import classify as classify_mod
from henet_edge.device.doctor import (
    check_architecture,
    check_bundle,
    check_machine,
    check_numpy,
    check_python,
    format_checks,
    healthy,
    run_doctor,
)
from henet_edge.device.environment import Probe

from .device_helpers import copy_bundle, fake_pi


@pytest.fixture
def no_default(monkeypatch, tmp_path):
    """No installed bundle and no shipped default model."""
    monkeypatch.setenv("HENET_EDGE_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(classify_mod, "DEFAULT_BUNDLE", tmp_path / "no-default")


def by_name(checks):
    return {c.name: c for c in checks}


def test_architecture_and_python():
    assert check_architecture("aarch64").status == "ok"
    armv7 = check_architecture("armv7l")
    assert armv7.status == "fail" and "64-bit" in armv7.fix
    assert check_python((3, 9, 2)).status == "fail"
    assert check_python((3, 11, 2)).status == "ok"


@pytest.mark.parametrize("numpy_version, legacy, litert, status", [
    ("2.1.3", True, False, "fail"),   # only tflite_runtime, which needs numpy<2
    ("2.1.3", True, True, "warn"),    # LiteRT carries on
    ("1.26.4", True, False, "ok"),
    ("2.1.3", False, True, "ok"),
])
def test_numpy_compatibility(numpy_version, legacy, litert, status):
    check = check_numpy(numpy_version, legacy, litert)
    assert check.status == status
    if status != "ok":
        assert "numpy<2" in check.detail and "ai-edge-litert" in check.fix


def test_healthy_machine_with_a_good_bundle(tiny_bundle, tmp_path):
    root, vcgencmd = fake_pi(tmp_path / "pi")
    checks = run_doctor(tiny_bundle, probe=Probe(root, vcgencmd), home=tmp_path)
    found = by_name(checks)
    assert healthy(checks)
    assert found["bundle"].status == "ok" and "match their sha256" in found["bundle"].detail
    assert found["classify"].status == "ok"
    assert found["delegate"].status == "ok"
    assert found["runtime"].status == "ok"
    assert found["governor"].status == "ok"
    assert found["throttling"].detail == "0x0: none"
    assert found["disk"].status == "ok"


def test_governor_and_throttling_problems_come_with_fixes(tmp_path):
    root, vcgencmd = fake_pi(tmp_path, governor="ondemand", throttled=("0x50005",),
                             temp="temp=81.0'C")
    found = by_name(check_machine(Probe(root, vcgencmd)))
    assert found["governor"].status == "warn"
    assert "performance" in found["governor"].fix
    assert found["temperature"].status == "warn"
    assert found["throttling"].status == "warn"
    assert "under-voltage" in found["throttling"].detail
    text = format_checks(list(found.values()))
    assert "[warn] governor: ondemand" in text and "fix: echo performance" in text


def test_a_slow_governor_is_no_power_problem(tmp_path):
    root, vcgencmd = fake_pi(tmp_path, governor="ondemand")
    found = by_name(check_machine(Probe(root, vcgencmd)))
    assert found["governor"].status == "warn"
    assert found["throttling"].status == "ok" and found["throttling"].detail == "0x0: none"


def test_no_model_fails(no_default, tmp_path):
    checks = run_doctor(probe=Probe(tmp_path, vcgencmd=None), home=tmp_path)
    bundle = by_name(checks)["bundle"]
    assert bundle.status == "fail" and "deploy" in bundle.fix
    assert not healthy(checks)
    assert "classify" not in by_name(checks)


def test_tampered_installed_bundle_fails(no_default, tiny_bundle, tmp_path):
    home = tmp_path / "home"
    installed = copy_bundle(tiny_bundle, home / "bundles" / "v1")
    (home / "current").symlink_to(installed, target_is_directory=True)
    check, _ = check_bundle(None)
    assert check.status == "ok"
    (installed / "labels.txt").write_text("changed\n")
    check, path = check_bundle(None)
    assert check.status == "fail" and "sha256 mismatch" in check.detail and path is None


def test_cli_doctor_exit_codes(no_default, tiny_bundle, tmp_path):
    good = CliRunner().invoke(main, ["doctor", "--model", str(tiny_bundle), "--json"])
    assert good.exit_code == 0, good.output
    report = json.loads(good.stdout)
    assert report["ok"] is True
    assert {c["name"] for c in report["checks"]} >= {"architecture", "python", "runtime",
                                                     "numpy", "cameras", "governor", "disk",
                                                     "bundle", "classify"}
    bad = CliRunner().invoke(main, ["doctor"])
    assert bad.exit_code == 1
    assert "[FAIL] bundle" in bad.stdout
    assert "Traceback" not in bad.output


def test_a_bare_tflite_is_checked_with_its_labels(no_default, tiny_bundle, tmp_path):
    model = tmp_path / "model.tflite"  # alone: no bundle or labels beside it
    model.write_bytes((tiny_bundle / "model_int8.tflite").read_bytes())
    without = CliRunner().invoke(main, ["doctor", "--model", str(model)])
    assert without.exit_code == 1 and "fix: pass --labels FILE" in without.stdout
    labels = tmp_path / "labels.txt"
    labels.write_text((tiny_bundle / "labels.txt").read_text())
    given = CliRunner().invoke(main, ["doctor", "--model", str(model), "--labels", str(labels),
                                      "--json"])
    assert given.exit_code == 0, given.output
    assert by_name_json(given.stdout)["classify"]["status"] == "ok"


def by_name_json(stdout: str) -> dict:
    return {c["name"]: c for c in json.loads(stdout)["checks"]}


def test_without_cpufreq_no_governor_command_is_suggested(tmp_path):
    # A VM or container has no /sys/devices/system/cpu/cpu0/cpufreq to write to.
    found = by_name(check_machine(Probe(tmp_path, vcgencmd=None)))
    assert found["governor"].status == "warn" and "no cpufreq" in found["governor"].detail
    assert not found["governor"].fix
