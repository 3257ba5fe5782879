"""The CLI only parses and prints: one way to fail, one way to show a failed host,
and the facts it used to hold (protocol counts, demo speeds, the bundle deploy
uses) answered by the library."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

import henet_edge.cli as cli_module
from henet_edge import UsageError
from henet_edge.cli import main
from henet_edge.deploy import commands
from henet_edge.deploy.demo import SPEEDS, DemoOptions
from henet_edge.deploy.errors import DeployError
from henet_edge.deploy.fleet import (
    FleetOptions,
    HostOutcome,
    failure_lines,
    fleet_error,
    fleet_json,
    outcome_table,
    raise_for_failures,
)
from henet_edge.deploy.report import deploy_row, format_status
from henet_edge.deploy.ssh import ConnectOptions
from henet_edge.device.bench import PROTOCOLS, BenchError, BenchOptions


def _exits_in(tree: ast.AST) -> list[str]:
    """``sys.exit(...)``, ``ctx.exit(...)`` and ``click.ClickException(...)`` calls."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name = node.func.attr
            if name == "exit" or name == "ClickException":
                found.append(f"line {node.lineno}: {ast.unparse(node.func)}")
    return found


def test_no_command_body_exits_by_itself():
    modules = sorted(Path(cli_module.__file__).parent.glob("*.py"))
    assert {m.name for m in modules} >= {"base.py", "desktop.py", "deploy.py", "device.py"}
    functions = [n for m in modules for n in ast.parse(m.read_text()).body
                 if isinstance(n, ast.FunctionDef)]
    bodies = [n for n in functions if n.name != "user_errors"]
    assert len(bodies) > 30  # every command of every module is looked at
    assert [e for body in bodies for e in _exits_in(body)] == []
    # ... and the check sees one where there is one: user_errors is the one way out.
    wrapper = next(n for n in functions if n.name == "user_errors")
    assert len(_exits_in(wrapper)) == 2  # ClickException and sys.exit(130)


def test_a_library_usage_error_exits_2_with_the_usage(tmp_path):
    result = CliRunner().invoke(main, ["calibrate", "--data", str(tmp_path), "--out",
                                       str(tmp_path / "calib.txt")])
    assert result.exit_code == 2
    assert "Usage:" in result.output and "--out must end in .npz" in result.output


def _outcomes() -> list[HostOutcome]:
    ok = {"host": "a", "name": "henet", "bundle": "0123456789abcdef", "version": "0.1.0",
          "runtime": {"name": "ai-edge-litert", "version": "2.0"},
          "selftest": {"passed": True, "text": "int8 8/8"}}
    return [HostOutcome("a", True, result=ok, seconds=1.25),
            HostOutcome("b", False, error="connection refused", seconds=0.5),
            HostOutcome("c", True, result={"host": "c", "same_device_as": "a"})]


def test_one_way_to_show_failed_hosts():
    outcomes = _outcomes()
    assert failure_lines(outcomes) == ["b: FAILED: connection refused"]
    assert str(fleet_error(outcomes)) == "1 of 3 hosts failed"
    assert str(fleet_error(outcomes[1:2])) == "connection refused"
    assert fleet_error(outcomes[:1]) is None
    echoed: list[str] = []
    with pytest.raises(DeployError, match="1 of 3 hosts failed"):
        raise_for_failures(outcomes, echoed.append)
    assert echoed == ["b: FAILED: connection refused"]
    echoed.clear()
    with pytest.raises(DeployError, match=r"^connection refused$"):
        raise_for_failures(outcomes[1:2], echoed.append)
    assert echoed == []  # one host: its error is the whole message
    named = [HostOutcome("pi", False, error="pi: cannot resolve host name 'pi'")]
    assert failure_lines(named) == ["pi: FAILED: cannot resolve host name 'pi'"]
    assert fleet_json(outcomes)["ok"] is False
    assert [h["host"] for h in fleet_json(outcomes)["hosts"]] == ["a", "b", "c"]


def test_outcome_table_rows():
    table = outcome_table(_outcomes(), ["host", "bundle", "device side", "runtime",
                                        "self-test", "time"], deploy_row)
    lines = table.splitlines()
    assert lines[2].split() == ["a", "henet", "0123456789ab", "henet-edge", "0.1.0",
                                "ai-edge-litert", "2.0", "passed", "(int8", "8/8)", "1.2s"]
    assert lines[3].split() == ["b", "FAILED", "(below)"]
    assert lines[4].split() == ["c", "same", "device", "as", "a"]


def test_format_status_of_one_device():
    state = {"host": "pi", "device": {"arch": "aarch64", "python": "3.11.2", "os": "Debian"},
             "free_bytes": 2_000_000_000, "version": "0.1.0", "venv": "v1",
             "runtime": {"name": "ai-edge-litert", "version": "2.0"}, "previous": "b" * 64,
             "bundles": [{"id": "a" * 64, "name": "henet-r3", "deployed": "2026-12-01",
                          "precisions": ["float32", "int8"], "size_bytes": 900_000,
                          "current": True},
                         {"id": "b" * 64, "name": "henet-r2", "deployed": None,
                          "precisions": ["int8"], "size_bytes": 500_000, "current": False,
                          "verify": {"ok": False, "problems": ["labels.txt: sha256"]}}],
             "problems": [], "last_bench": None, "service": None}
    text = format_status(state)
    assert text.splitlines()[0].startswith("pi: aarch64, Python 3.11.2, Debian; 2.0 GB")
    assert "aaaaaaaaaaaa  henet-r3" in text and "current" in text
    assert "previous DAMAGED: labels.txt: sha256" in text
    assert "last bench: none" in text and "service: unknown" in text
    assert format_status({"host": "x", "same_device_as": "pi"}).startswith(
        "x: the same device as pi")


def test_bench_options_take_the_protocols_counts():
    options = BenchOptions.for_protocol("paper", repeats=2, core=1)
    assert (options.runs, options.repeats, options.warmup, options.core) == (
        PROTOCOLS["paper"]["runs"], 2, PROTOCOLS["paper"]["warmup"], 1)
    assert BenchOptions().runs == PROTOCOLS["paper"]["runs"]
    with pytest.raises(BenchError, match="unknown protocol 'fast'"):
        BenchOptions.for_protocol("fast")


def test_demo_speeds():
    assert (DemoOptions().runs, DemoOptions().repeats) == SPEEDS["default"]
    full = DemoOptions().at_speed("full")
    assert (full.runs, full.repeats) == (PROTOCOLS["paper"]["runs"],
                                         PROTOCOLS["paper"]["repeats"])
    assert (DemoOptions().at_speed("quick").runs, DemoOptions().at_speed(None).runs) == (
        SPEEDS["quick"][0], SPEEDS["default"][0])


def test_fleet_options_checks_before_any_connection(tmp_path):
    with pytest.raises(UsageError, match="give the device"):
        FleetOptions().resolve()
    with pytest.raises(UsageError, match="--jobs"):
        FleetOptions(hosts=["pi"], jobs=0).resolve()
    for timeout in (0.0, float("inf"), float("nan")):
        with pytest.raises(UsageError, match="--connect-timeout"):
            FleetOptions(hosts=["pi"], connect=ConnectOptions(connect_timeout=timeout)).resolve()
    for command in (["status"], ["deploy", "BUNDLE"]):  # refused as the command line is read
        result = CliRunner().invoke(main, [*command, "--host", "pi", "--connect-timeout", "inf"])
        assert result.exit_code == 2 and "'--connect-timeout'" in result.stderr, result.output
    hosts_file = tmp_path / "hosts"
    hosts_file.write_text("# lab\npi2\npi1\n")
    fleet = FleetOptions(hosts=["pi1"], hosts_file=hosts_file)
    assert fleet.resolve() == ["pi1", "pi2"] and fleet.several


def test_deploy_checks_the_bundle_before_any_host(tmp_path, monkeypatch):
    """A bundle failing its own checks stops deploy before any wheel build or connection."""
    from henet_edge.deploy import fleet, ssh, wheel
    from henet_edge.device.bundle import BundleError

    def reached(*_a, **_k):
        raise AssertionError("the wheel build or a connection came before the bundle check")

    for module, name in ((ssh, "connect"), (wheel, "project_wheel"), (fleet, "on_fleet"),
                         (commands, "on_fleet")):
        monkeypatch.setattr(module, name, reached)
    with pytest.raises(BundleError, match=r"not a bundle \(no manifest.json\)"):
        commands.deploy(tmp_path, FleetOptions(hosts=["pi.local"]), commands.InstallOptions(),
                        log=lambda _m: None)
    with pytest.raises(UsageError, match="give the device"):
        commands.deploy(None, FleetOptions(), commands.InstallOptions(), log=lambda _m: None)


def test_compare_footer_and_calibration_come_from_the_library(image_folder):
    from henet_edge.convert.compare import calibration_inputs, format_machine

    result = {"bench": {"protocol": "paper", "core": 1,
                        "environment": {"cpu": "AMD EPYC", "machine": "x86_64"}}}
    assert format_machine(result) == ("paper protocol, core 1, AMD EPYC (x86_64, board: "
                                      "unknown)")
    assert calibration_inputs(None) is None
    inputs = calibration_inputs(str(image_folder), num=6)
    assert inputs.shape[1:] == (31, 31, 3) and len(inputs) == 6


def test_calibrate_and_selftest_text_come_from_the_library(image_folder, tiny_bundle, tmp_path):
    out = tmp_path / "calib.npz"
    result = CliRunner().invoke(main, ["calibrate", "--data", str(image_folder), "--num", "10",
                                       "--seed", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    first, second = result.output.splitlines()
    assert first.startswith(f"{out}: 10 images from {image_folder} (seed 3), sha256 ")
    assert second == "per class: blue 4, green 3, red 3"
    result = CliRunner().invoke(main, ["selftest", str(tiny_bundle), "--precision", "int8"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("self-test of ") and lines[0].endswith(":")
    assert lines[1].startswith("  int8: passed (")


def test_selftest_is_listed_and_checks_the_installed_bundle_by_default(tiny_bundle, tmp_path,
                                                                       monkeypatch):
    """It was hidden, and needed a path although the installed bundle is the usual one."""
    home = tmp_path / "edge"
    home.mkdir()
    os.symlink(tiny_bundle, home / "current")
    monkeypatch.setenv("HENET_EDGE_HOME", str(home))
    assert "\n  selftest " in CliRunner().invoke(main, ["--help"]).output
    result = CliRunner().invoke(main, ["selftest", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["passed"] is True and Path(report["bundle"]) == tiny_bundle.resolve()


def test_a_host_name_that_does_not_resolve_stops_demo_and_deploy_before_the_slow_work(
        monkeypatch, tiny_bundle):
    """demo --host typo converted for half a minute before saying the name did not resolve."""
    from henet_edge.deploy import demo, wheel

    def slow(*_a, **_k):
        raise AssertionError("the conversion or wheel build ran before the name was checked")

    monkeypatch.setattr(demo, "convert_default", slow)
    monkeypatch.setattr(wheel, "project_wheel", slow)
    for command in (["demo", "--quick", "--core", "0"], ["deploy", str(tiny_bundle)]):
        result = CliRunner().invoke(main, [*command, "--host", "pi@no-such-host.invalid"])
        assert result.exit_code == 1, result.output
        assert "cannot resolve host name 'no-such-host.invalid'" in result.output


def test_ctrl_c_during_a_started_run_says_how_to_go_on(tiny_run, image_folder, tmp_path,
                                                        monkeypatch):
    """train printed just 'interrupted' on Ctrl-C, not the --resume that goes on."""
    import shutil

    from henet_edge.henet_keras import train as train_module

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "train", interrupted)
    result = CliRunner().invoke(main, ["train", "--resume", str(run)])
    assert result.exit_code == 130
    assert f"henet-edge train --resume {run}" in result.output and "interrupted" in result.output
