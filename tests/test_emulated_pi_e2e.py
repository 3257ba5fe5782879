"""End to end on an emulated Raspberry Pi: the real `henet-edge deploy` to real aarch64.

``scripts/emulated-pi`` builds (once, cached) a Debian arm64 root file system and starts
its sshd on a loopback port; every program in it, sshd and Python included, runs under
QEMU as the target's core. Two targets:

* ``bookworm``: Debian 12 (Raspberry Pi OS Bookworm's base), Python 3.11, a Cortex-A72
  (a Pi 4); ``.ci/run`` runs this one (``-k bookworm``);
* ``trixie``: Debian 13 (Raspberry Pi OS Trixie's base), Python 3.13, a Cortex-A76
  (a Pi 5), with the dot-product and LSE atomics extensions a Pi 4 lacks.

Against each, this test runs the real CLI:

* ``deploy``: the probe reports aarch64 and the suite's Python, a venv is created,
  the aarch64 wheels of ai-edge-litert, numpy and pillow come from the package index,
  and the bundle is verified and self-tested on the device before ``current`` switches;
* a second ``deploy`` of the same bundle installs and uploads nothing;
* ``remote classify`` of the bundle's golden images and a short ``remote bench``;
* ``status`` shows the bundle and the last bench.

Slow (minutes: the first run also builds the root; pip under emulation is slow), so it is
marked ``slow`` and runs with ``pytest -m slow``. It needs root, debootstrap and QEMU's
binfmt support (``scripts/emulated-pi check`` says what is missing); without them it is
skipped with that message. ``HENET_EDGE_EMU_ROOT`` picks the cache folder (``-trixie``
appended for the second target). A running
emulated Pi on that root is reused (and left running); otherwise one is started on a free
port and stopped at the end. Everything the test installs on the device goes into a
fresh folder that is removed afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "emulated-pi"
TARGETS = {
    # suite: (QEMU core, Python, Debian release, /proc/cpuinfo part, core name, Armv8.2)
    "bookworm": ("cortex-a72", "3.11.", "12", "0xd08", "Cortex-A72", False),
    "trixie": ("cortex-a76", "3.13.", "13", "0xd0b", "Cortex-A76", True),
}
HWCAP_ASIMD = 1 << 1        # Advanced SIMD: every 64-bit Pi has it
HWCAP_ATOMICS = 1 << 8      # ARMv8.1 LSE atomics: a Pi 5 (A76) has them, a Pi 4 (A72) not
HWCAP_ASIMDDP = 1 << 20     # ARMv8.2 dot product: likewise
AUXV_HWCAP = r"""
import struct
data = open("/proc/self/auxv", "rb").read()
pairs = dict(struct.iter_unpack("<QQ", data))
print(pairs.get(16, 0))
"""


def emu_root(suite: str) -> Path:
    """The script's cache folder: as the script picks it (through sudo: the caller's home)."""
    tail = "" if suite == "bookworm" else f"-{suite}"
    value = os.environ.get("HENET_EDGE_EMU_ROOT")
    if value:
        return Path(value + tail)
    home = Path.home()
    if os.environ.get("SUDO_USER") and os.environ.get("SUDO_UID", "0") != "0":
        import pwd

        with contextlib.suppress(KeyError):
            home = Path(pwd.getpwnam(os.environ["SUDO_USER"]).pw_dir)
    return home / ".cache" / "henet-edge" / f"emulated-pi{tail}"


def script(suite: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args, "--suite", suite, "--root", str(emu_root(suite))],
                          capture_output=True, text=True, timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session", params=list(TARGETS))
def emulated_pi(request, tmp_path_factory):
    """The running emulated Pi: its port, key, known_hosts and ssh_config.

    Session-scoped so that it comes before the session's ``tiny_bundle`` (it is named
    first): a machine that cannot emulate skips without training anything.
    """
    suite = request.param
    cpu, python, release, part, core, armv82 = TARGETS[suite]
    check = script(suite, "check")
    if check.returncode != 0:
        pytest.skip("emulated Pi prerequisites missing:\n" + check.stderr.strip())
    build = script(suite, "build", timeout=3600)
    assert build.returncode == 0, build.stderr[-3000:]
    root = emu_root(suite)
    started = script(suite, "status").returncode != 0
    if not started and (root / "cpu").read_text().strip() != cpu:
        pytest.fail(f"the running emulated Pi at {root} emulates another core; stop it first")
    if started:
        start = script(suite, "start", "--port", str(free_port()), "--cpu", cpu, timeout=300)
        assert start.returncode == 0, start.stderr[-3000:]
    info = {
        "suite": suite, "cpu": cpu, "python": python, "release": release, "part": part,
        "core": core, "armv82": armv82,
        "port": int((root / "port").read_text()),
        "key": root / "id_ed25519",
        "known_hosts": root / "known_hosts",
        "ssh_config": root / "ssh_config",
        "empty_config": tmp_path_factory.mktemp("ssh") / "config",
    }
    info["empty_config"].write_text("")
    info["spec"] = f"pi@127.0.0.1:{info['port']}"
    assert f"[127.0.0.1]:{info['port']} ssh-ed25519 " in info["known_hosts"].read_text()
    yield info
    if started:
        stop = script(suite, "stop")
        assert stop.returncode == 0, stop.stderr


@pytest.fixture(scope="module")
def remote_dir(emulated_pi):
    """A fresh state folder on the device; removed at the end."""
    path = f"/home/pi/henet-edge-e2e-{uuid.uuid4().hex[:8]}"
    yield path
    device_shell(emulated_pi, f"rm -rf {path}")


def device_shell(pi: dict, command: str) -> str:
    """Run a shell command on the emulated Pi as `pi`, through the project's own SSH."""
    from henet_edge.deploy.ssh import ConnectOptions, connect

    options = ConnectOptions(ssh_config=str(pi["empty_config"]), identities=[str(pi["key"])],
                             known_hosts=str(pi["known_hosts"]), use_agent=False)
    with connect(pi["spec"], options) as connection:
        result = connection.run(command, timeout=600)
    assert result.ok, f"{command}: {result.last_line()}"
    return result.out


def henet(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    return subprocess.run([sys.executable, "-m", "henet_edge.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def explicit(pi: dict, remote: str) -> list[str]:
    """Connection options without the ssh_config alias: user@host:port, key, known_hosts."""
    return ["--host", pi["spec"], "-i", str(pi["key"]), "--known-hosts", str(pi["known_hosts"]),
            "--ssh-config", str(pi["empty_config"]), "--remote-dir", remote]


def test_the_emulated_pi_is_the_targets_arm64_machine(emulated_pi):
    out = device_shell(emulated_pi, "uname -m; id -un; echo $QEMU_CPU; "
                                    "python3 -c 'import sys; print(sys.version.split()[0])'; "
                                    "test -e /proc/device-tree/model && echo dt || echo no-dt; "
                                    "sed -n 's/^CPU part.*: //p' /proc/cpuinfo | sort -u; "
                                    f"python3 -c '{AUXV_HWCAP}'")
    machine, user, cpu, python, device_tree, part, hwcap = out.split()
    assert (machine, user, cpu) == ("aarch64", "pi", emulated_pi["cpu"])
    assert python.startswith(emulated_pi["python"])
    assert device_tree == "no-dt"  # no Pi board: the device side must say "unknown"
    assert part == emulated_pi["part"]  # /proc/cpuinfo names the core (XNNPACK reads it)
    hwcap = int(hwcap)
    assert hwcap & HWCAP_ASIMD
    # sshd's SetEnv QEMU_CPU reached QEMU: the instruction set is the target core's
    # (a Pi 5's A76 has Armv8.2's dot product and LSE atomics, a Pi 4's A72 neither).
    assert bool(hwcap & HWCAP_ATOMICS) is emulated_pi["armv82"]
    assert bool(hwcap & HWCAP_ASIMDDP) is emulated_pi["armv82"]
    assert "sudo" not in device_shell(emulated_pi, "ls /usr/bin")


def test_deploy_classify_bench_status(emulated_pi, remote_dir, tiny_bundle, tmp_path):
    pi = emulated_pi
    # Deploy through the printed ssh_config entry (alias, key and known_hosts from it).
    proc = henet("deploy", str(tiny_bundle), "--host", "emulated-pi",
                 "--ssh-config", str(pi["ssh_config"]), "--remote-dir", remote_dir, "--json",
                 timeout=3600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout)
    assert report["ok"]
    (host,) = report["hosts"]
    result = host["result"]
    device = result["device"]
    assert device["arch"] == "aarch64" and device["machine"] == "aarch64"
    assert device["python"].startswith(pi["python"])
    assert f"Debian GNU/Linux {pi['release']}" in device["os"]
    assert device["board"] is None
    assert result["installed"] is True and result["uploaded"] is True
    assert result["runtime"].get("name") in ("ai_edge_litert", "ai-edge-litert"), result["runtime"]
    assert result["selftest"]["passed"] is True, result["selftest"]

    # The venv holds the aarch64 runtime from the package index.
    out = device_shell(pi, f"{remote_dir}/venv/bin/python -c 'import platform, ai_edge_litert, "
                           f"numpy; print(platform.machine(), numpy.__version__)'; "
                           f"readlink {remote_dir}/current")
    machine, _numpy, current = out.split()
    assert machine == "aarch64"
    assert current.startswith("bundles/") and result["bundle"] in current

    # Deploying the same bundle again installs and uploads nothing.
    proc = henet("deploy", str(tiny_bundle), *explicit(pi, remote_dir), "--json")
    assert proc.returncode == 0, proc.stderr[-4000:]
    again = json.loads(proc.stdout)["hosts"][0]["result"]
    assert again["installed"] is False and again["uploaded"] is False
    assert again["bundle"] == result["bundle"]

    # remote classify: the golden images, read like a local classify (local paths).
    golden = sorted((tiny_bundle / "golden").glob("*.png"))
    assert golden
    proc = henet("remote", "classify", str(tiny_bundle / "golden"), *explicit(pi, remote_dir),
                 "--json")
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == len(golden)
    text = proc.stdout
    assert all(str(p) in text for p in golden)
    assert remote_dir not in text
    # Each image's label on the emulated Pi is the one its golden entry recorded.
    labels = json.loads((tiny_bundle / "manifest.json").read_text())["labels"]
    entries = json.loads((tiny_bundle / "golden.json").read_text())["images"]
    expected = {str(tiny_bundle / e["file"]): labels[e["int8"]["top1"]] for e in entries}
    assert {line["path"]: line["label"] for line in lines} == expected

    # remote bench: short; the result is saved here and on the device.
    out = tmp_path / "bench.json"
    proc = henet("remote", "bench", *explicit(pi, remote_dir), "--runs", "20", "--repeats", "1",
                 "--warmup", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-4000:]
    bench = json.loads(out.read_text())
    assert bench["models"] and bench["remote"]["bundle"] == result["bundle"]
    assert all(m["per_inference_ms"]["mean"] > 0 for m in bench["models"])
    # XNNPACK really runs (it needs /sys and an arm64 /proc/cpuinfo, which the script gives).
    assert all(m["delegate"] == "XNNPACK" for m in bench["models"]), bench["models"]
    environment = bench["environment"]
    assert environment["machine"] == "aarch64" and environment["cpu"] == pi["core"]
    # No Pi board, vcgencmd or thermal zones here: reported as unknown, not guessed.
    assert environment["board"] == "unknown"
    assert environment["before"]["vcgencmd_temperature_c"] == "unknown"

    proc = henet("status", *explicit(pi, remote_dir), "--json")
    assert proc.returncode == 0, proc.stderr[-4000:]
    status = json.loads(proc.stdout)["hosts"][0]["result"]
    assert status["current"] == result["bundle"]
    assert status["last_bench"]
