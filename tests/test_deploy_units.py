"""Deploy without SSH: host specs, SSH config, host keys, device checks, version
bookkeeping, the device self-test, and the whole installer through the local
connection (the demo's path)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from henet_edge.deploy import agent
from henet_edge.deploy.errors import DeployError, DeviceCheckError, HostKeyError
from henet_edge.deploy.fleet import format_table, run_fleet
from henet_edge.deploy.hostkeys import KnownHosts, check_host_key, fingerprint
from henet_edge.deploy.hosts import load_ssh_config, parse_host_spec, resolve_host
from henet_edge.deploy.probe import DeviceInfo, SpaceNeeded, check_device, resolve_remote_dir
from henet_edge.deploy.versions import (
    deploy_order,
    previous_version,
    realised_history,
    recency_order,
    resolve_version,
    to_prune,
)

from .deploy_helpers import bundle_id, bundle_variant, flip_byte


# ------------------------------------------------------------------ hosts
@pytest.mark.parametrize("spec, host, user, port", [
    ("pi.local", "pi.local", None, None),
    ("pi@pi.local", "pi.local", "pi", None),
    ("pi@pi.local:2222", "pi.local", "pi", 2222),
    ("10.0.0.7:22", "10.0.0.7", None, 22),
    ("[fe80::1]:2200", "fe80::1", None, 2200),
    ("me@[::1]", "::1", "me", None),
    ("::1", "::1", None, None),
    ("ssh://pi@pi.local:2022/", "pi.local", "pi", 2022),
])
def test_parse_host_spec(spec, host, user, port):
    parsed = parse_host_spec(spec)
    assert (parsed.host, parsed.user, parsed.port) == (host, user, port)


@pytest.mark.parametrize("spec", ["", "pi:abc", "pi:70000", "@pi", "[::1", "a b"])
def test_parse_host_spec_rejects(spec):
    with pytest.raises(DeployError):
        parse_host_spec(spec)


def test_ssh_config_alias(tmp_path):
    config = tmp_path / "config"
    config.write_text("""\
Host pi
  HostName 192.168.1.50
  User pi
  Port 2200
  IdentityFile ~/keys/pi_ed25519
  IdentitiesOnly yes
  StrictHostKeyChecking accept-new
Host far
  HostName 10.9.9.9
  ProxyJump pi
""")
    cfg = load_ssh_config(config)
    target = resolve_host("pi", cfg)
    assert (target.hostname, target.user, target.port) == ("192.168.1.50", "pi", 2200)
    assert target.identity_files == [os.path.expanduser("~/keys/pi_ed25519")]
    assert target.identities_only and target.accept_new
    # What --host says wins over the config, like ssh.
    assert resolve_host("root@pi:22", cfg).user == "root"
    assert resolve_host("root@pi:22", cfg).port == 22
    assert resolve_host("far", cfg).proxy_jump == ["pi"]
    assert resolve_host("other", cfg).hostname == "other"
    with pytest.raises(DeployError, match="no such file"):
        load_ssh_config(tmp_path / "missing")


# ------------------------------------------------------------------ host keys
def test_known_hosts_unknown_accept_new_and_changed(tmp_path):
    import paramiko

    key = paramiko.ECDSAKey.generate()
    other = paramiko.ECDSAKey.generate()
    known = KnownHosts(tmp_path / "ssh" / "known_hosts")
    with pytest.raises(HostKeyError) as exc:
        check_host_key(known, "[pi]:2222", key, accept_new=False, display="pi:2222")
    assert fingerprint(key) in str(exc.value) and "--accept-new-host-key" in str(exc.value)
    assert fingerprint(key).startswith("SHA256:") and not fingerprint(key).endswith("=")
    assert not known.user_file.exists()
    check_host_key(known, "[pi]:2222", key, accept_new=True, display="pi:2222")
    assert known.user_file.read_text().startswith("[pi]:2222 ecdsa-sha2-nistp256 ")
    check_host_key(known, "[pi]:2222", key, accept_new=False, display="pi:2222")
    before = known.user_file.read_text()
    for accept in (False, True):
        with pytest.raises(HostKeyError, match="CHANGED"):
            check_host_key(known, "[pi]:2222", other, accept_new=accept, display="pi:2222")
    assert known.user_file.read_text() == before
    # The same key on another port is a different host, as for OpenSSH.
    with pytest.raises(HostKeyError, match="not known"):
        check_host_key(known, "[pi]:22", key, accept_new=False, display="pi")


# ------------------------------------------------------------------ device checks
def _info(**kw) -> DeviceInfo:
    base = dict(host="pi", machine="aarch64", system="Linux", home="/home/pi",
                base="/home/pi/.henet-edge", python="python3", python_path="/usr/bin/python3",
                python_version=(3, 11, 2), venv_ok=True, free_bytes=10**10)
    base.update(kw)
    return DeviceInfo(**base)


def test_check_device_ok_and_errors():
    assert check_device(_info(), space=SpaceNeeded(bundle=10**6)) == []
    with pytest.raises(DeviceCheckError, match="unsupported architecture riscv64"):
        check_device(_info(machine="riscv64"))
    warnings = check_device(_info(machine="riscv64", runtimes={"tflite_runtime": True}))
    assert "tflite_runtime" in warnings[0]
    with pytest.raises(DeviceCheckError, match="no Python 3"):
        check_device(_info(python_path=None, python_version=None))
    with pytest.raises(DeviceCheckError, match="too old"):
        check_device(_info(python_version=(3, 9, 2)))
    with pytest.raises(DeviceCheckError, match="python3-venv"):
        check_device(_info(venv_ok=False))
    assert check_device(_info(venv_ok=False), needs_venv=False) == []
    with pytest.raises(DeviceCheckError, match="not enough free disk"):
        check_device(_info(free_bytes=5 * 10**6), space=SpaceNeeded(bundle=4 * 10**6,
                                                                   reserve=2 * 10**6))


def test_resolve_remote_dir():
    assert resolve_remote_dir("~/.henet-edge", "/home/pi") == "/home/pi/.henet-edge"
    assert resolve_remote_dir("/opt/edge/", "/home/pi") == "/opt/edge"
    with pytest.raises(DeviceCheckError):
        resolve_remote_dir("relative/dir", "/home/pi")


# ------------------------------------------------------------------ versions
def test_deploy_order_rollback_and_prune():
    history = [{"action": "deploy", "bundle": "a"}, {"action": "deploy", "bundle": "b"},
               {"action": "deploy", "bundle": "c"}, {"action": "rollback", "bundle": "b"}]
    on_disk = {"a": 1.0, "b": 2.0, "c": 3.0, "x": 0.5}
    order = deploy_order(history, on_disk)
    assert order == ["x", "a", "b", "c"]
    assert previous_version(order, "c") == "b"
    assert previous_version(order, "b") == "a"
    assert previous_version(order, "x") is None
    assert to_prune(order, "c", 2) == ["x", "a"]
    assert to_prune(order, "a", 2) == ["x", "b"]  # current is always kept
    assert to_prune(order, "c", 1) == ["x", "a", "b"]
    bundles = [{"id": "ab12cd" + "0" * 58, "name": "r3"}, {"id": "ab99" + "1" * 60, "name": "r2"}]
    assert resolve_version("ab12", bundles) == bundles[0]["id"]
    assert resolve_version("r2", bundles) == bundles[1]["id"]
    with pytest.raises(DeployError, match="ambiguous"):
        resolve_version("ab12", [*bundles, {"id": "ab12" + "3" * 60}])
    with pytest.raises(DeployError, match="no such installed version"):
        resolve_version("nope", bundles)


def test_realised_history_drops_switches_a_crash_cut_short():
    """An entry is written just before its switch: one whose switch never came is dropped."""
    history = [{"action": "deploy", "bundle": "a", "from": None},
               {"action": "deploy", "bundle": "b", "from": "a"},
               {"action": "deploy", "bundle": "c", "from": "b"},  # killed before the switch
               {"action": "rollback", "bundle": "a", "from": "b"}]
    assert [e["bundle"] for e in realised_history(history, "a")] == ["a", "b", "a"]
    assert [e["bundle"] for e in realised_history(history[:3], "b")] == ["a", "b"]
    assert [e["bundle"] for e in realised_history(history[:3], "c")] == ["a", "b", "c"]
    assert realised_history(history, None) == []


def test_fleet_isolates_failures():
    def work(host, _index):
        if host == "bad":
            raise DeviceCheckError("bad: full disk")
        if host == "boom":
            raise RuntimeError("unexpected")
        if host == "gone":
            raise SystemExit(3)  # ends a thread silently: the host was dropped, exit 0
        return {"host": host}

    outcomes = run_fleet(["a", "bad", "boom", "b", "gone"], work, jobs=2)
    assert [o.ok for o in outcomes] == [True, False, False, True, False]
    assert outcomes[1].error == "bad: full disk"
    assert "RuntimeError" in outcomes[2].error
    assert outcomes[4].host == "gone" and "without an outcome" in outcomes[4].error
    from henet_edge.deploy.fleet import fleet_json

    answered = [outcomes[0], outcomes[3]]  # status --verify: answered, but damaged
    assert fleet_json(answered)["ok"] is True
    assert fleet_json(answered, healthy=False)["ok"] is False  # as its exit code says
    table = format_table(["host", "state"], [["a", "ok"], ["bad", "FAILED"]])
    assert table.splitlines()[1].startswith("----")


# ------------------------------------------------------------------ agent + self-test
def test_agent_verify(tiny_bundle, tmp_path):
    copy = bundle_variant(tiny_bundle, tmp_path / "b")
    bid = bundle_id(copy)
    assert agent.verify(str(copy), bid)["ok"]
    assert not agent.verify(str(copy), "0" * 64)["ok"]
    flip_byte(copy / "model_int8.tflite")
    result = agent.verify(str(copy), bid)
    assert not result["ok"] and "model_int8.tflite: sha256 mismatch" in result["problems"][0]
    probe = agent.probe(str(tmp_path / "no" / "such"))
    assert probe["free_bytes"] > 0 and not probe["base_exists"]


def test_selftest_passes_and_fails_with_both_predictions(tiny_bundle, tmp_path):
    from henet_edge.device.selftest import format_report, run_selftest

    report = run_selftest(tiny_bundle)
    assert report["passed"], format_report(report)
    assert set(report["precisions"]) == {"int8", "float32"}

    def tamper(golden):
        for entry in golden["images"]:
            for precision in ("int8", "float32"):
                logits = entry[precision]["logits"]
                logits[:] = logits[1:] + logits[:1]  # shift every class by one
                entry[precision]["top1"] = max(range(len(logits)), key=logits.__getitem__)

    bad = bundle_variant(tiny_bundle, tmp_path / "bad", golden_edit=tamper)
    report = run_selftest(bad)
    assert not report["passed"]
    json.dumps(report)  # the CLI prints it as JSON
    lines = "\n".join(format_report(report))
    assert "FAILED" in lines and "desktop" in lines and "device" in lines


# ------------------------------------------------------------------ the local connection
def test_local_deploy_rollback_status(tiny_bundle, tmp_path):
    """The demo's path: the real installer into a folder, no SSH, no venv."""
    from henet_edge.deploy import deploy_local
    from henet_edge.deploy.connection import LocalConnection
    from henet_edge.deploy.installer import Installer, InstallOptions
    from henet_edge.device.bundle import load_bundle

    target = tmp_path / "pi"
    b = bundle_variant(tiny_bundle, tmp_path / "b", name="tiny_b")
    messages: list[str] = []
    first = deploy_local(tiny_bundle, target, device_python=sys.executable,
                         log=messages.append, progress=False)
    assert first.uploaded and first.selftest["passed"] and first.previous is None
    assert os.readlink(target / "current") == f"bundles/{bundle_id(tiny_bundle)}"
    load_bundle(target / "current")
    again = deploy_local(tiny_bundle, target, device_python=sys.executable, progress=False)
    assert not again.uploaded and not again.installed
    second = deploy_local(b, target, device_python=sys.executable, progress=False)
    assert second.previous == bundle_id(tiny_bundle)
    assert os.readlink(target / "current") == f"bundles/{bundle_id(b)}"

    options = InstallOptions(remote_dir=str(target), device_python=sys.executable,
                             remote_python=sys.executable)
    with LocalConnection() as t:
        installer = Installer(t, options)
        back = installer.rollback()
        assert back["bundle"] == bundle_id(tiny_bundle)
        state = installer.status(verify=True)
    assert state["current"] == bundle_id(tiny_bundle)
    assert {x["id"] for x in state["bundles"]} == {bundle_id(tiny_bundle), bundle_id(b)}
    assert all(x["verify"]["ok"] for x in state["bundles"])
    history = [json.loads(line) for line in (target / "history.jsonl").read_text().splitlines()]
    assert [h["action"] for h in history] == ["deploy", "deploy", "deploy", "rollback"]
    assert not list((target / "tmp").iterdir())


def test_local_deploy_unwritable_target(tiny_bundle, tmp_path):
    from henet_edge.deploy import deploy_local

    if os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(DeployError, match="preparing"):
        deploy_local(tiny_bundle, locked / "pi", device_python=sys.executable)


def test_a_lock_that_cannot_be_taken_says_why(tmp_path):
    """The agent's reason travels on stdout: its stderr is not read while it holds."""
    from henet_edge.deploy.connection import LocalConnection
    from henet_edge.deploy.lock import DeployLock

    (tmp_path / "afile").write_text("x")
    lock = DeployLock(LocalConnection(), sys.executable, name="local")
    with pytest.raises(DeployError) as caught:
        lock.take(str(tmp_path / "afile" / "state"), 1)
    assert str(caught.value).startswith(f"local: cannot take the deploy lock in "
                                        f"{tmp_path}/afile/state: Not a directory")


def test_a_long_history_keeps_its_newest_entries(tmp_path):
    line = json.dumps({"action": "deploy", "bundle": "a" * 64, "note": "x" * 200})
    newest = json.dumps({"action": "rollback", "bundle": "b" * 64})
    (tmp_path / agent.HISTORY).write_text((line + "\n") * 6000 + newest + "\n")  # 1.6 MB
    entries = agent._history(str(tmp_path))
    assert entries[-1]["bundle"] == "b" * 64
    assert len(entries) > 3000
    (tmp_path / agent.HISTORY).write_text(line + "\n" + newest + "\n")  # a short one whole
    assert [e["action"] for e in agent._history(str(tmp_path))] == ["deploy", "rollback"]


def _local_installer(target: Path, **options):
    from henet_edge.deploy.connection import LocalConnection
    from henet_edge.deploy.installer import Installer, InstallOptions

    return Installer(LocalConnection(name="local"), InstallOptions(
        remote_dir=str(target), device_python=sys.executable, remote_python=sys.executable,
        **options), progress=False)


def test_a_deploy_clears_only_its_own_leftovers_in_tmp(tmp_path, tiny_bundle):
    """A remote command's scratch folder (no lock) may be in use: kept unless a day old."""
    from henet_edge.deploy import deploy_local

    target = tmp_path / "pi"
    deploy_local(tiny_bundle, target, device_python=sys.executable, progress=False)
    for name in ("bench-1-aa", "classify-2-bb", "upload-abc-3-cc", "install-4-dd"):
        (target / "tmp" / name).mkdir()
        (target / "tmp" / name / "file").write_text("x")
    day_old = target / "tmp" / "classify-2-bb"
    os.utime(day_old, (os.path.getmtime(day_old) - 25 * 3600,) * 2)
    installer = _local_installer(target)
    installer.probe()
    installer._prepare()
    assert sorted(p.name for p in (target / "tmp").iterdir()) == ["bench-1-aa"]


def test_a_venv_pruned_while_waiting_for_the_lock_is_installed_again(tmp_path):
    """Another deploy, holding the lock, may prune the venv this one found complete."""
    installer = _local_installer(tmp_path / "pi")
    installer.options.device_python = None
    plan = SimpleNamespace(key="k1", need_venv=False, wheelhouse=[],
                           installed={"venv": "k1", "venv_record": {"version": "x"}})
    installer._lock = lambda: {"venv": "k3", "venv_record": {"version": "y"}}
    installer.venvs.is_complete = lambda key, installed: key == installed.get("venv")
    checked = []
    installer._check_space = checked.append
    installer._lock_and_replan(plan)
    assert plan.need_venv is True and checked == [plan]


def test_a_service_that_fails_to_install_says_the_version_is_current(tmp_path, tiny_bundle):
    from henet_edge.deploy import deploy_local

    target = tmp_path / "pi"
    deploy_local(tiny_bundle, target, device_python=sys.executable, progress=False)
    b = bundle_variant(tiny_bundle, tmp_path / "b", name="tiny_b")
    installer = _local_installer(target, service=["--bind", "nonsense"])
    with pytest.raises(DeployError) as caught:
        installer.deploy(b)
    assert os.readlink(target / "current") == f"bundles/{bundle_id(b)}"
    assert f"{bundle_id(b)[:12]} (tiny_b) is current, so only the service is left" \
        in str(caught.value)


class _Cloned:
    """A connection to a Pi whose SD card was cloned: the shared host key, its own boot."""

    def __init__(self, boot_id: str):
        self.boot_id = boot_id

    def host_key_fingerprint(self) -> str:
        return "SHA256:shared"

    def run(self, command: str, **_kw):
        from henet_edge.deploy.connection import CommandResult

        assert command == "cat /proc/sys/kernel/random/boot_id"
        return CommandResult(command, 0, f"{self.boot_id}\n".encode(), b"")


def test_cloned_pis_share_a_host_key_but_are_each_deployed_to():
    from henet_edge.deploy.fleet import SameDevice, device_identity

    seen = SameDevice()
    assert seen.claim("pi-a", device_identity(_Cloned("boot-1"))) is None
    assert seen.claim("pi-b", device_identity(_Cloned("boot-2"))) is None  # another Pi
    assert seen.claim("pi-a.local", device_identity(_Cloned("boot-1"))) == "pi-a"


def test_project_wheel_is_cached_and_reproducible(tmp_path):
    import zipfile

    from henet_edge.deploy.wheel import project_wheel, source_digest

    first = project_wheel(cache=tmp_path / "a")
    assert first.name.startswith("henet_edge-") and first.suffix == ".whl"
    assert project_wheel(cache=tmp_path / "a") == first  # cached: not rebuilt
    # Reproducible: the same sources give the same wheel bytes, so the device's venv
    # (keyed by the wheel's sha256) is reused even after the cache is cleared.
    assert project_wheel(cache=tmp_path / "b").read_bytes() == first.read_bytes()
    names = zipfile.ZipFile(first).namelist()
    assert "henet_edge/deploy/agent.py" in names
    assert "henet_edge/device/selftest.py" in names
    assert source_digest(Path(__file__).resolve().parents[1])[:16] in str(first.parent)


def test_known_hosts_read_like_openssh(tmp_path):
    """Odd lines are skipped with a warning, @revoked refuses, [host]:port is explained."""
    import paramiko

    key, revoked, other = (paramiko.ECDSAKey.generate() for _ in range(3))
    path = tmp_path / "known_hosts"
    path.write_text(
        "# a comment\n"
        "broken.example ssh-ed25519 AAAA-not-base64==\n"
        "@cert-authority *.example ssh-ed25519 "
        "AAAAC3NzaC1lZDI1NTE5AAAAIBnU4/f2RAXv4Y6e7fZgh8ZLHhHqtRV4xw4U9V8mC1xR\n"
        f"@revoked * {revoked.get_name()} {revoked.get_base64()}\n"
        f"pi,![pi]:2200 {key.get_name()} {key.get_base64()}\n"
        f"[pi]:2222 {key.get_name()} {key.get_base64()}\n")
    known = KnownHosts(path)
    messages: list[str] = []
    check_host_key(known, "[pi]:2222", key, accept_new=False, display="pi:2222",
                   log=messages.append)
    check_host_key(known, "pi", key, accept_new=False, display="pi")
    assert any(":2: " in m and "skipped" in m for m in messages)
    with pytest.raises(HostKeyError, match="REVOKED") as exc:
        check_host_key(known, "[pi]:2222", revoked, accept_new=True, display="pi:2222")
    assert f"{path}:4" in str(exc.value) and fingerprint(revoked) in str(exc.value)
    with pytest.raises(HostKeyError, match=r"without a port.*must start with \[pi\]:2201"):
        check_host_key(known, "[pi]:2201", other, accept_new=False, display="pi:2201")
    check_host_key(known, "cam.example", other, accept_new=True, display="cam")
    assert any("@cert-authority" in w for w in known.warnings)
    before = path.read_text()
    with pytest.raises(HostKeyError, match="CHANGED"):
        check_host_key(known, "pi", other, accept_new=True, display="pi")
    assert path.read_text() == before


@pytest.mark.parametrize("machine, bits", [("armv7l", 32), ("armv6l", 32), ("aarch64", 32)])
def test_32_bit_arm_refused_at_the_probe(machine, bits):
    """Even with a TFLite runtime installed: pip would fail later, there is no LiteRT wheel."""
    info = _info(machine=machine, python_bits=bits, runtimes={"tflite_runtime": True})
    with pytest.raises(DeviceCheckError, match=r"32-bit ARM.*Raspberry Pi OS \(64-bit\)"):
        check_device(info, needs_venv=False)
    assert check_device(_info(python_bits=64), needs_venv=False) == []


def test_deploy_reads_the_hosts_file_once(tiny_bundle, tmp_path, monkeypatch):
    """The hosts checked before the wheel build are the hosts deployed to."""
    from henet_edge.deploy import commands, hosts, ssh
    from henet_edge.deploy.fleet import FleetOptions
    from henet_edge.deploy.installer import InstallOptions

    hosts_file = tmp_path / "hosts"
    hosts_file.write_text("pi-a\npi-b\n")
    reads: list[str] = []
    real_read = hosts.read_hosts_file

    def read_and_change(path):
        reads.append(str(path))
        found = real_read(path)
        hosts_file.write_text("pi-c\n")  # a second read would see another fleet
        return found

    def unreachable(host, *_args, **_kwargs):
        raise DeployError(f"{host}: unreachable")

    monkeypatch.setattr(hosts, "read_hosts_file", read_and_change)
    monkeypatch.setattr(ssh, "connect", unreachable)
    monkeypatch.setattr("henet_edge.deploy.wheel.project_wheel", lambda log: tmp_path / "w.whl")
    outcomes = commands.deploy(tiny_bundle, FleetOptions(hosts_file=hosts_file),
                               InstallOptions(), log=lambda _m: None)
    assert reads == [str(hosts_file)]
    assert [(o.host, o.error) for o in outcomes] == [("pi-a", "pi-a: unreachable"),
                                                     ("pi-b", "pi-b: unreachable")]


@pytest.mark.parametrize("command", [["deploy"], ["status"], ["demo", "--quick"]])
@pytest.mark.parametrize("extra, message, code", [
    (["--host", ""], "--host is empty", 1),
    (["--host", "pi@"], "--host 'pi@': not a host name", 1),
    (["--host", "pi.local", "--connect-timeout", "0"],
     "Invalid value for '--connect-timeout'", 2),  # was "ValueError: Timeout..."
])
def test_bad_hosts_and_timeouts_fail_before_any_slow_work(command, extra, message, code):
    """They used to fail after the wheel build (deploy) or the whole conversion (demo)."""
    from click.testing import CliRunner

    from henet_edge.cli import main

    result = CliRunner().invoke(main, [*command, *extra])
    assert result.exit_code == code, result.output
    assert message in result.output and "Traceback" not in result.output
    assert "wheel" not in result.output and "bundle written" not in result.output


def test_a_negative_reserve_is_a_usage_error_before_the_wheel_build():
    from click.testing import CliRunner

    from henet_edge.cli import main

    result = CliRunner().invoke(main, ["deploy", "--host", "pi.local", "--reserve-mb", "-5"])
    assert result.exit_code == 2 and "--reserve-mb must be 0 or more" in result.output
    assert "wheel" not in result.output


def test_only_a_folder_an_earlier_henet_edge_made_is_adopted(tmp_path):
    # A project with a venv link, tmp/ and venvs/ has only names henet-edge uses; taken
    # for an old state folder, its tmp/ and venvs/ would have been cleaned by a deploy.
    project = tmp_path / "project"
    (project / "tmp").mkdir(parents=True)
    (project / "venvs" / "myenv").mkdir(parents=True)
    (project / "venv").symlink_to("/usr")
    assert agent.refusal(str(project))["error"] == "foreign"
    (project / "venv").unlink()
    (project / "venv").symlink_to("venvs/myenv")  # a venv, but not one henet-edge made
    assert agent.refusal(str(project))["error"] == "foreign"

    older = tmp_path / "older"
    bundle = older / "bundles" / ("ab" * 32)
    bundle.mkdir(parents=True)
    (older / "current").symlink_to(f"bundles/{'ab' * 32}")
    assert agent.refusal(str(older)) is None
    made = tmp_path / "venv-only"
    (made / "venvs" / "k1").mkdir(parents=True)
    (made / "venvs" / "k1" / agent.INSTALL_RECORD).write_text("{}")
    (made / "venv").symlink_to("venvs/k1")
    assert agent.refusal(str(made)) is None


def test_a_rejected_version_is_neither_rolled_back_to_nor_kept_before_the_good_one():
    # B was bad and rolled back from; C was then deployed from A. A is what C replaced:
    # the rollback target and the last to prune. (Both went by deploys alone: B, and A.)
    history = [{"action": "deploy", "bundle": "A", "from": None},
               {"action": "deploy", "bundle": "B", "from": "A"},
               {"action": "rollback", "bundle": "A", "from": "B"},
               {"action": "deploy", "bundle": "C", "from": "A"}]
    on_disk = {"A": 1.0, "B": 2.0, "C": 3.0}
    realised = realised_history(history, "C")
    assert previous_version(deploy_order(realised, on_disk), "C", realised) == "A"
    assert to_prune(recency_order(realised, on_disk), "C", 2) == ["B"]
    # C was current only by a rollback (its deploy was killed before the switch), then D
    # was deployed from it: C is the previous version and is kept.
    history = [{"action": "deploy", "bundle": "A", "from": None},
               {"action": "deploy", "bundle": "B", "from": "A"},
               {"action": "deploy", "bundle": "C", "from": "B"},  # killed before the switch
               {"action": "rollback", "bundle": "C", "from": "B"},
               {"action": "deploy", "bundle": "D", "from": "C"}]
    on_disk = {"A": 1.0, "B": 2.0, "C": 3.0, "D": 4.0}
    realised = realised_history(history, "D")
    order = deploy_order(realised, on_disk)
    assert previous_version(order, "D", realised) == "C"
    assert to_prune(recency_order(realised, on_disk), "D", 2) == ["A", "B"]
    # after a rollback, a plain rollback goes further back, not to the rejected version
    realised = realised_history([*history[:2], {"action": "rollback", "bundle": "A",
                                                "from": "B"}], "A")
    assert previous_version(deploy_order(realised, {"A": 1.0, "B": 2.0}), "A", realised) is None


def test_per_host_file_names_keep_apart_hosts_that_read_alike():
    """``user@pi:22`` and ``user_pi_22`` both became ``user_pi_22``: one host's bench
    results overwrote the other's."""
    from henet_edge.deploy.remote import default_bench_path

    def part(host: str) -> str:
        return default_bench_path(host).name.split("-")[1]

    assert part("pi.local") == "pi.local"  # a plain name stays as typed
    assert part("user_pi_22") == "user_pi_22"
    tricky = part("user@pi:22")
    assert tricky.startswith("user_pi_22_") and tricky != part("user_pi_22")
    assert tricky != part("user@pi/22") and part("user@pi:22") == tricky  # stable
