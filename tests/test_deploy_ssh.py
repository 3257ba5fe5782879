"""``henet-edge deploy`` against a real OpenSSH server on 127.0.0.1.

The "device" is this machine reached through a real ``sshd`` (see
``deploy_helpers.SSHServer``) with an isolated ``$HOME``; its ``python3`` is the
one on sshd's default PATH (Debian's ``/usr/bin/python3``, like Raspberry Pi
OS). The device venv is created for real (``python3 -m venv
--system-site-packages``) and its dependencies come from a wheelhouse made once
per module with ``pip download 'henet_edge-*.whl[device]'`` and uploaded with
``--wheelhouse`` (the offline-device path), so no test waits on the device
downloading from an index. The venv is installed once and reused by every
later deploy, as on a real device.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from henet_edge.cli import main
from henet_edge.device.bundle import load_bundle

from .conftest import skip_unless_ci, unavailable
from .deploy_helpers import (
    NotSSHServer,
    SSHServer,
    bundle_id,
    bundle_variant,
    flip_byte,
    free_port,
    keygen,
    keygen_fingerprint,
    make_wheelhouse,
    sshd_missing_reason,
)

pytestmark = skip_unless_ci(sshd_missing_reason())


@dataclass
class Kit:
    server: SSHServer
    root: Path
    known_hosts: Path
    ssh_config: Path
    wheel: Path
    wheelhouse: Path
    bundle: Path          # tiny_bundle
    bundle_b: Path        # the same model under another name: another version

    @property
    def spec(self) -> str:
        return self.server.spec

    @property
    def edge(self) -> Path:
        return self.server.edge_home

    def conn_args(self, *, known_hosts: Path | None = None, identity: Path | None = None):
        return ["--known-hosts", str(known_hosts or self.known_hosts),
                "--identity", str(identity or self.server.user_key),
                "--ssh-config", str(self.ssh_config)]

    def current(self) -> str:
        return os.readlink(self.edge / "current").split("/")[-1]


@pytest.fixture(autouse=True)
def _no_agent(monkeypatch):
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


@pytest.fixture(scope="module")
def kit(tmp_path_factory, tiny_bundle):
    from henet_edge.deploy.ssh import ConnectOptions, connect
    from henet_edge.deploy.wheel import project_wheel

    root = tmp_path_factory.mktemp("deploy")
    server = SSHServer(root / "sshd").start()
    try:
        known_hosts = root / "known_hosts"
        known_hosts.write_text(server.known_hosts_line)
        ssh_config = root / "ssh_config"
        ssh_config.write_text("")
        options = ConnectOptions(identities=[str(server.user_key)],
                                 known_hosts=str(known_hosts), ssh_config=str(ssh_config))
        with connect(server.spec, options) as t:
            check = t.run("python3 -c 'import sys, venv, ensurepip; "
                          "print(\"%d.%d\" % sys.version_info[:2])'")
        if not check.ok:
            unavailable("the device side of this machine (python3 on sshd's PATH) cannot make "
                        f"venvs: {check.last_line()}; apt-get install python3-venv")
        device_py = check.out.strip()
        wheel = project_wheel(cache=root / "cache")
        wheelhouse = root / "wheelhouse"
        made = make_wheelhouse(wheel, wheelhouse, device_py)
        if made.returncode != 0:
            unavailable(f"cannot make the device wheelhouse (no package index?): "
                        f"{made.stderr.strip().splitlines()[-1:]}")
        bundle_b = bundle_variant(tiny_bundle, root / "bundle_b", name="tiny_b")
        yield Kit(server, root, known_hosts, ssh_config, wheel, wheelhouse, tiny_bundle,
                  bundle_b)
    finally:
        server.stop()


def cli(kit: Kit, *args: str, conn: bool = True, **conn_kw):
    argv = [*args, *(kit.conn_args(**conn_kw) if conn else [])]
    return CliRunner().invoke(main, argv, catch_exceptions=False)


def deploy(kit: Kit, bundle: Path, *extra: str, host: str | None = None, **conn_kw):
    return cli(kit, "deploy", str(bundle), "--host", host or kit.spec, "--wheel",
               str(kit.wheel), "--wheelhouse", str(kit.wheelhouse), *extra, **conn_kw)


def ensure_current(kit: Kit, bundle: Path) -> None:
    result = deploy(kit, bundle)
    assert result.exit_code == 0, result.output
    assert kit.current() == bundle_id(bundle)


# ------------------------------------------------------------------ host keys
def test_unknown_host_refused_then_accepted(kit, tmp_path):
    known = tmp_path / "known_hosts"
    result = cli(kit, "status", "--host", kit.spec, known_hosts=known)
    assert result.exit_code == 1
    fp = keygen_fingerprint(kit.server.host_key.with_suffix(".pub"))
    message = result.output.strip().splitlines()[-1]
    assert "not known" in message and fp in message and "--accept-new-host-key" in message
    assert not known.exists()

    result = cli(kit, "status", "--host", kit.spec, "--accept-new-host-key", known_hosts=known)
    assert result.exit_code == 0, result.output
    assert f"recorded ED25519 {fp}" in result.output
    # Recorded in OpenSSH's format: ssh-keygen finds it.
    found = subprocess.run(["ssh-keygen", "-F", f"[127.0.0.1]:{kit.server.port}",
                            "-f", str(known)], capture_output=True, text=True)
    assert found.returncode == 0 and "ssh-ed25519" in found.stdout
    result = cli(kit, "status", "--host", kit.spec, known_hosts=known)
    assert result.exit_code == 0, result.output


def test_changed_host_key_refused(kit, tmp_path):
    other = keygen(tmp_path / "other_host_key")
    key_type, key_b64 = other.with_suffix(".pub").read_text().split()[:2]
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{kit.server.port} {key_type} {key_b64}\n")
    for flags in ([], ["--accept-new-host-key"]):
        result = cli(kit, "status", "--host", kit.spec, *flags, known_hosts=known)
        assert result.exit_code == 1
        assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in result.output
        assert keygen_fingerprint(kit.server.host_key.with_suffix(".pub")) in result.output
    assert known.read_text().count("\n") == 1


def test_ssh_config_alias_and_proxyjump(kit, tmp_path):
    config = tmp_path / "config"
    s = kit.server
    config.write_text(f"""\
Host devpi
  HostName 127.0.0.1
  Port {s.port}
  User {s.user}
  IdentityFile {s.user_key}
  IdentitiesOnly yes
Host viajump
  HostName 127.0.0.1
  Port {s.port}
  User {s.user}
  IdentityFile {s.user_key}
  ProxyJump devpi
""")
    for alias in ("devpi", "viajump"):
        result = CliRunner().invoke(main, ["status", "--host", alias, "--ssh-config", str(config),
                                           "--known-hosts", str(kit.known_hosts), "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["hosts"][0]["ok"]


def test_host_key_alias_is_looked_up_as_openssh_does_without_the_port(kit, tmp_path):
    """A key recorded under a HostKeyAlias (as `ssh` records it) is the same host on any
    port: no `[alias]:port` line is needed, and none is added."""
    s = kit.server
    config = tmp_path / "config"
    config.write_text(f"Host tunnelpi\n  HostName 127.0.0.1\n  Port {s.port}\n"
                      f"  User {s.user}\n  IdentityFile {s.user_key}\n  HostKeyAlias mypi\n")
    known = tmp_path / "known_hosts"
    known.write_text("mypi " + s.known_hosts_line.split(" ", 1)[1])
    result = CliRunner().invoke(main, ["status", "--host", "tunnelpi", "--ssh-config",
                                       str(config), "--known-hosts", str(known), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["hosts"][0]["ok"]
    assert known.read_text().count("\n") == 1


def test_command_output_is_complete_and_streamed(kit):
    """Every byte arrives, even when sshd sends the exit status before the output."""
    from henet_edge.deploy.ssh import ConnectOptions, connect

    options = ConnectOptions(identities=[str(kit.server.user_key)],
                             known_hosts=str(kit.known_hosts), ssh_config=str(kit.ssh_config))
    with connect(kit.spec, options) as t:
        for n in range(100):  # short, quick commands are where the status comes first
            result = t.run(f"echo a; echo b; printf '%s\\n' {n}; echo e >&2; exit 3")
            assert (result.out, result.err, result.returncode) == (f"a\nb\n{n}\n", "e\n", 3)
        result = t.run("head -c 3000007 /dev/zero | tr '\\0' x")
        assert len(result.stdout) == 3000007
        chunks: list[bytes] = []
        result = t.run("cat; echo done", input=b"hello\n", stdout_sink=chunks.append)
        assert result.out == "hello\ndone\n" == b"".join(chunks).decode()


# ------------------------------------------------------------------ deploys
def test_full_deploy_then_classify_on_target(kit, tmp_path):
    result = deploy(kit, kit.bundle, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)["hosts"][0]["result"]
    assert report["bundle"] == bundle_id(kit.bundle)
    assert report["selftest"]["passed"] is True
    assert report["runtime"]["name"] == "ai_edge_litert"
    assert report["device"]["arch"] in ("x86_64", "aarch64")
    # The layout: venv -> venvs/<key>, current -> bundles/<id>, verified on the device.
    assert os.readlink(kit.edge / "venv").startswith("venvs/")
    record = json.loads((kit.edge / "venv" / "henet-edge-install.json").read_text())
    assert record["wheel_sha256"] and record["dependencies"] == "wheelhouse"
    assert kit.current() == bundle_id(kit.bundle)
    load_bundle(kit.edge / "current")

    # Re-deploying the same thing installs and uploads nothing.
    result = deploy(kit, kit.bundle, "--json")
    assert result.exit_code == 0, result.output
    again = json.loads(result.stdout)["hosts"][0]["result"]
    assert not again["installed"] and not again["uploaded"]

    # Classify on the target: output as `classify` prints it, with local paths.
    from PIL import Image

    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(photo)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    result = cli(kit, "remote", "classify", str(photo), "--host", kit.spec, "--json")
    assert result.exit_code == 0, result.output
    line = json.loads(result.stdout.strip().splitlines()[0])
    labels = load_bundle(kit.bundle).labels
    assert line["path"] == str(photo) and line["ok"] and line["label"] in labels
    result = cli(kit, "remote", "classify", str(photo), str(broken), "--host", kit.spec)
    assert result.exit_code == 1
    assert f"{photo}: {line['label']}" in result.output
    assert f"{broken}: error" in result.output
    assert not list((kit.edge / "tmp").iterdir())  # uploads cleaned up


def test_second_deploy_and_rollback(kit):
    ensure_current(kit, kit.bundle)
    a, b = bundle_id(kit.bundle), bundle_id(kit.bundle_b)
    result = deploy(kit, kit.bundle_b)
    assert result.exit_code == 0, result.output
    assert kit.current() == b
    assert "tiny_b" in result.output and "passed" in result.output  # the summary table

    result = cli(kit, "rollback", "--host", kit.spec)
    assert result.exit_code == 0, result.output
    assert kit.current() == a
    result = cli(kit, "rollback", "--host", kit.spec, "--to", "tiny_b")
    assert result.exit_code == 0, result.output
    assert kit.current() == b
    result = cli(kit, "rollback", "--host", kit.spec, "--to", a[:8])
    assert result.exit_code == 0, result.output
    assert kit.current() == a

    result = cli(kit, "status", "--host", kit.spec, "--json")
    assert result.exit_code == 0, result.output
    state = json.loads(result.stdout)["hosts"][0]["result"]
    assert state["current"] == a and {a, b} <= {x["id"] for x in state["bundles"]}
    result = cli(kit, "status", "--host", kit.spec)
    assert result.exit_code == 0 and "current" in result.output and a[:12] in result.output


def test_kill_during_upload_leaves_current_intact(kit, tmp_path):
    ensure_current(kit, kit.bundle)
    before = kit.current()
    big = bundle_variant(kit.bundle, tmp_path / "big", name="tiny_big",
                         extra={"padding.bin": os.urandom(48 << 20)})
    argv = [sys.executable, "-m", "henet_edge.cli", "deploy", str(big), "--host", kit.spec,
            "--wheel", str(kit.wheel), "--wheelhouse", str(kit.wheelhouse), *kit.conn_args()]
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    partial = None
    deadline = time.monotonic() + 180
    try:
        while partial is None and time.monotonic() < deadline and proc.poll() is None:
            for path in (kit.edge / "tmp").glob("upload-*/padding.bin"):
                try:
                    if 0 < path.stat().st_size < (48 << 20):
                        partial = path
                except OSError:  # moved into place between glob and stat
                    pass
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        output = proc.communicate()[0].decode(errors="replace")
    assert partial is not None, f"never saw the upload in progress:\n{output}"
    assert proc.returncode == -signal.SIGKILL

    # The previous version is still current, intact and runnable.
    assert kit.current() == before
    load_bundle(kit.edge / "current")
    run = subprocess.run([str(kit.edge / "venv" / "bin" / "python"), "-m", "henet_edge.cli",
                          "selftest", str(kit.edge / "current"), "--json"],
                         capture_output=True, text=True, env={**env, "HOME": str(kit.server.home)})
    assert run.returncode == 0 and json.loads(run.stdout)["passed"], run.stderr

    # A re-run completes the deploy and clears the leftovers.
    result = deploy(kit, big)
    assert result.exit_code == 0, result.output
    assert kit.current() == bundle_id(big)
    assert not list((kit.edge / "tmp").iterdir())


def test_corrupted_upload_detected_by_hash_check(kit, tmp_path):
    from henet_edge.deploy.errors import DeployError
    from henet_edge.deploy.installer import Installer, InstallOptions
    from henet_edge.deploy.ssh import ConnectOptions, connect

    ensure_current(kit, kit.bundle)
    other = bundle_variant(kit.bundle, tmp_path / "other", name="tiny_other")
    options = ConnectOptions(identities=[str(kit.server.user_key)],
                             known_hosts=str(kit.known_hosts), ssh_config=str(kit.ssh_config))
    with connect(kit.spec, options) as t:
        real_put = t.put

        def corrupting_put(local, remote, *, progress=None):
            real_put(local, remote, progress=progress)
            if remote.endswith("model_int8.tflite"):  # damage it after it arrived
                with t._client().open(remote, "r+") as f:
                    f.seek(64)
                    byte = f.read(1)
                    f.seek(64)
                    f.write(bytes([byte[0] ^ 0xFF]))

        t.put = corrupting_put
        installer = Installer(t, InstallOptions(wheel=kit.wheel, wheelhouse=kit.wheelhouse),
                              progress=False)
        with pytest.raises(DeployError, match="failed its hash check"):
            installer.deploy(other)
    assert kit.current() == bundle_id(kit.bundle)
    assert not (kit.edge / "bundles" / bundle_id(other)).exists()
    assert not list((kit.edge / "tmp").iterdir())

    # A file damaged on the device is found by status --verify, refused by rollback,
    # and healed by deploying that version again.
    ensure_current(kit, kit.bundle_b)
    a = bundle_id(kit.bundle)
    flip_byte(kit.edge / "bundles" / a / "model_float32.tflite")
    result = cli(kit, "status", "--host", kit.spec, "--verify")
    assert result.exit_code == 0 and "DAMAGED" in result.output
    result = cli(kit, "rollback", "--host", kit.spec, "--to", a[:10])
    assert result.exit_code == 1 and "damaged" in result.output
    assert kit.current() == bundle_id(kit.bundle_b)
    result = deploy(kit, kit.bundle)
    assert result.exit_code == 0, result.output
    assert "uploading it again" in result.output
    load_bundle(kit.edge / "current")


def test_failing_selftest_keeps_previous_version(kit, tmp_path):
    ensure_current(kit, kit.bundle)

    def tamper(golden):
        for entry in golden["images"]:
            for precision in ("int8", "float32"):
                logits = entry[precision]["logits"]
                logits[:] = logits[1:] + logits[:1]
                entry[precision]["top1"] = max(range(len(logits)), key=logits.__getitem__)

    bad = bundle_variant(kit.bundle, tmp_path / "bad", name="tiny_bad", golden_edit=tamper)
    result = deploy(kit, bad)
    assert result.exit_code == 1
    assert "self-test FAILED" in result.output
    # each failing image named with both predictions, as `henet-edge selftest` words it
    assert re.search(r"int8 golden/\S+\.png: desktop \w+ \(-?[\d.]+\), device \w+ "
                     r"\(-?[\d.]+\): ", result.output), result.output
    assert kit.current() == bundle_id(kit.bundle)
    assert not (kit.edge / "bundles" / bundle_id(bad)).exists()


def test_fleet_with_one_unreachable_host(kit):
    dead = f"{kit.server.user}@127.0.0.1:{free_port()}"
    result = cli(kit, "deploy", str(kit.bundle), "--host", kit.spec, "--host", dead,
                 "--wheel", str(kit.wheel), "--jobs", "2", "--json")
    assert result.exit_code == 1
    hosts = json.loads(result.stdout)["hosts"]
    assert [h["ok"] for h in hosts] == [True, False]
    assert "connection refused" in hosts[1]["error"]
    assert kit.current() == bundle_id(kit.bundle)
    result = cli(kit, "status", "--host", kit.spec, "--host", dead)
    assert result.exit_code == 1
    assert f"{dead}: FAILED: " in result.output and bundle_id(kit.bundle)[:12] in result.output


def test_remote_bench_saves_result_and_status_shows_it(kit, tmp_path):
    ensure_current(kit, kit.bundle)
    out = tmp_path / "bench.json"
    result = cli(kit, "remote", "bench", "--host", kit.spec, "--out", str(out),
                 "--runs", "3", "--repeats", "1", "--warmup", "1", "--precision", "all")
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["remote"]["bundle"] == bundle_id(kit.bundle)
    assert len(data["models"]) == 2 and data["environment"]
    assert "repeat 1/1" in result.output  # progress streamed from the device
    result = cli(kit, "status", "--host", kit.spec)
    assert result.exit_code == 0, result.output
    assert "last bench" in result.output and "none" not in result.output.split("last bench")[1]


def test_remote_bench_on_several_hosts_keeps_one_plot_per_host(kit, tmp_path, monkeypatch):
    """Hosts benched together each fetched their plot into the one --plot file, each
    overwriting the last; now each gets NAME-HOST.png, drawn here from the device's
    latencies (the device has no matplotlib). One device reached under two names is
    benched once."""
    from henet_edge.deploy.remote import default_bench_path
    from henet_edge.device.bench import read_latencies

    ensure_current(kit, kit.bundle)
    monkeypatch.chdir(tmp_path)  # the results' JSON files land here
    s = kit.server
    kit.ssh_config.write_text(f"Host samepi\n  HostName 127.0.0.1\n  Port {s.port}\n"
                              f"  User {s.user}\n")
    try:
        result = cli(kit, "remote", "bench", "--host", kit.spec, "--host", "samepi",
                     "--runs", "4", "--repeats", "2", "--warmup", "1",
                     "--plot", str(tmp_path / "latency.png"),
                     "--latencies", str(tmp_path / "deep" / "ns.json"))
    finally:
        kit.ssh_config.write_text("")
    assert result.exit_code == 0, result.output
    # whichever name reached the device first benched it; the other was "the same device"
    parts = {default_bench_path(h).name.split("-")[1] for h in (kit.spec, "samepi")}
    pngs = [p.name for p in tmp_path.glob("*.png")]
    assert len(pngs) == 1 and pngs[0] in {f"latency-{part}.png" for part in parts}, pngs
    part = pngs[0].removeprefix("latency-").removesuffix(".png")
    assert (tmp_path / pngs[0]).read_bytes()[:4] == b"\x89PNG"
    latencies = read_latencies(tmp_path / "deep" / f"ns-{part}.json")  # its folder made
    assert [len(v) for v in latencies.values()] == [4 * 2]
    assert f"wrote {tmp_path / 'deep' / f'ns-{part}.json'}" in result.output
    assert "/tmp" not in result.output.replace(str(tmp_path), "")  # no device paths shown


# ------------------------------------------------------------------ bad input
def test_unreachable_and_wrong_port_and_unknown_name(kit):
    closed = free_port()
    result = cli(kit, "status", "--host", f"127.0.0.1:{closed}")
    assert result.exit_code == 1 and "connection refused" in result.output
    result = cli(kit, "status", "--host", "no-such-device.invalid")
    assert result.exit_code == 1 and "cannot resolve" in result.output
    web = NotSSHServer()
    try:
        result = cli(kit, "status", "--host", f"127.0.0.1:{web.port}", "--connect-timeout", "5")
    finally:
        web.close()
    assert result.exit_code == 1 and "does not speak SSH" in result.output


def test_auth_failure_and_locked_key(kit, tmp_path):
    stranger = keygen(tmp_path / "stranger")
    result = cli(kit, "status", "--host", kit.spec, identity=stranger)
    assert result.exit_code == 1 and "authentication failed" in result.output
    locked = keygen(tmp_path / "locked", passphrase="secret words")
    result = cli(kit, "status", "--host", kit.spec, identity=locked)
    assert result.exit_code == 1
    assert "locked with a passphrase" in result.output and "ssh-add" in result.output


def test_no_python_on_device(kit):
    result = deploy(kit, kit.bundle, "--remote-python", "/nonexistent/python3",
                    "--remote-dir", "~/fresh-nopython")
    assert result.exit_code == 1 and "no Python 3" in result.output
    assert not (kit.server.home / "fresh-nopython").exists()


def test_full_disk_refused_before_writing(kit):
    result = deploy(kit, kit.bundle, "--remote-dir", "~/fresh-full", "--reserve-mb",
                    str(10**12))
    assert result.exit_code == 1 and "not enough free disk" in result.output
    assert not (kit.server.home / "fresh-full").exists()


def test_bundle_failing_its_hashes_refused_before_connecting(kit, tmp_path):
    bad = bundle_variant(kit.bundle, tmp_path / "bad")
    flip_byte(bad / "model_int8.tflite")
    result = deploy(kit, bad, host=f"127.0.0.1:{free_port()}")
    assert result.exit_code == 1
    assert "fails its manifest hashes" in result.output
    assert "connection refused" not in result.output


# ------------------------------------------------------------------ one device, many hands
def _installer(kit: Kit, connection, **options):
    from henet_edge.deploy.installer import Installer, InstallOptions

    return Installer(connection, InstallOptions(wheel=kit.wheel, wheelhouse=kit.wheelhouse,
                                               **options), progress=False)


def _connect(kit: Kit):
    from henet_edge.deploy.ssh import ConnectOptions, connect

    return connect(kit.spec, ConnectOptions(identities=[str(kit.server.user_key)],
                                            known_hosts=str(kit.known_hosts),
                                            ssh_config=str(kit.ssh_config)))


def test_second_deploy_waits_for_the_device_lock_which_dies_with_its_connection(kit):
    from henet_edge.deploy.errors import DeployError

    ensure_current(kit, kit.bundle)
    holder = _connect(kit)
    first = _installer(kit, holder)
    first.probe()
    first._lock()
    try:
        with _connect(kit) as t, pytest.raises(DeployError, match="another deploy or rollback"):
            _installer(kit, t, lock_timeout=1).deploy(kit.bundle_b)
        assert kit.current() == bundle_id(kit.bundle)
    finally:
        holder.close()  # drops the connection without releasing: the device-side lock dies
    with _connect(kit) as t:
        _installer(kit, t, lock_timeout=20).deploy(kit.bundle_b)
    assert kit.current() == bundle_id(kit.bundle_b)


def test_concurrent_deploys_both_succeed_and_leave_current_whole(kit):
    ensure_current(kit, kit.bundle)
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    procs = []
    for bundle in (kit.bundle, kit.bundle_b):
        argv = [sys.executable, "-m", "henet_edge.cli", "deploy", str(bundle), "--keep", "1",
                "--host", kit.spec, "--wheel", str(kit.wheel), "--wheelhouse",
                str(kit.wheelhouse), *kit.conn_args()]
        procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT))
        time.sleep(0.3)
    outputs = [p.communicate(timeout=300)[0].decode(errors="replace") for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    load_bundle(kit.edge / "current")  # whole, not dangling
    result = cli(kit, "status", "--host", kit.spec, "--verify")
    assert result.exit_code == 0 and "WARNING" not in result.output, result.output


def test_remote_dir_with_someone_elses_files_is_refused(kit):
    mine = kit.server.home / "projects"
    (mine / "tmp").mkdir(parents=True, exist_ok=True)
    (mine / "tmp" / "notes.txt").write_text("keep me")
    (mine / "bundles").mkdir(exist_ok=True)
    for remote_dir in ("~/projects", "~"):
        result = deploy(kit, kit.bundle, "--remote-dir", remote_dir)
        assert result.exit_code == 1, result.output
        assert "not made by henet-edge" in result.output
    assert (mine / "tmp" / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in mine.iterdir()) == ["bundles", "tmp"]
    result = deploy(kit, kit.bundle, "--remote-dir", "~/fresh-marked")
    assert result.exit_code == 0, result.output
    assert (kit.server.home / "fresh-marked" / ".henet-edge-state").is_file()


@pytest.mark.parametrize("crash", ["before", "after"])
def test_crash_at_the_switch_leaves_status_and_rollback_truthful(kit, crash):
    from henet_edge.deploy.errors import ConnectError

    ensure_current(kit, kit.bundle_b)
    ensure_current(kit, kit.bundle)
    a, b = bundle_id(kit.bundle), bundle_id(kit.bundle_b)
    with _connect(kit) as t:
        real_run = t.run

        def crashing_run(command, **kwargs):
            switching = "mv -T" in command and ".current.new-" in command
            if switching and crash == "before":
                raise ConnectError("simulated crash")
            result = real_run(command, **kwargs)
            if switching:
                raise ConnectError("simulated crash")
            return result

        t.run = crashing_run
        with pytest.raises(ConnectError):
            _installer(kit, t).deploy(kit.bundle_b)
    result = cli(kit, "status", "--host", kit.spec, "--json")
    state = json.loads(result.stdout)["hosts"][0]["result"]
    expected_current, expected_previous = (a, b) if crash == "before" else (b, a)
    assert kit.current() == state["current"] == expected_current
    assert state["previous"] == expected_previous
    result = cli(kit, "rollback", "--host", kit.spec)
    assert result.exit_code == 0, result.output
    assert kit.current() == expected_previous


def test_redeploying_damaged_current_never_leaves_it_dangling(kit):
    from henet_edge.deploy.errors import ConnectError

    ensure_current(kit, kit.bundle)
    a = bundle_id(kit.bundle)
    flip_byte(kit.edge / "bundles" / a / "model_int8.tflite")
    result = cli(kit, "status", "--host", kit.spec, "--verify")
    assert result.exit_code == 1 and "WARNING: current" in result.output, result.output
    with _connect(kit) as t:
        def dying_put(local, remote, *, progress=None):
            raise ConnectError("simulated crash during the upload")

        t.put = dying_put
        with pytest.raises(ConnectError):
            _installer(kit, t).deploy(kit.bundle)
    assert (kit.edge / "current").resolve().is_dir()  # damaged, but never pointing at nothing
    result = deploy(kit, kit.bundle)
    assert result.exit_code == 0, result.output
    load_bundle(kit.edge / "current")

    # A dangling current is reported by status, and --verify makes it an error.
    ensure_current(kit, kit.bundle_b)
    ensure_current(kit, kit.bundle)
    import shutil

    shutil.rmtree(kit.edge / "bundles" / a)
    result = cli(kit, "status", "--host", kit.spec)
    assert result.exit_code == 0 and "dangling" in result.output, result.output
    result = cli(kit, "status", "--host", kit.spec, "--verify")
    assert result.exit_code == 1 and "dangling" in result.output
    ensure_current(kit, kit.bundle)


# ------------------------------------------------------------------ clear errors
def _cli_process(kit: Kit, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    return subprocess.run([sys.executable, "-m", "henet_edge.cli", *args, *kit.conn_args()],
                          env=env, capture_output=True, text=True, timeout=timeout)


def test_listeners_that_are_not_ssh_get_one_line_errors(kit):
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)  # accepts connections (the backlog) and never says a word
    web = NotSSHServer()
    try:
        quiet = _cli_process(kit, "status", "--host", f"127.0.0.1:{silent.getsockname()[1]}",
                             "--connect-timeout", "2")
        http = _cli_process(kit, "status", "--host", f"127.0.0.1:{web.port}",
                            "--connect-timeout", "5")
    finally:
        silent.close()
        web.close()
    for run in (quiet, http):
        assert run.returncode == 1
        assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1, \
            run.stderr
    assert "does not speak SSH" in quiet.stderr


def test_remote_dir_validated_before_connecting(kit):
    dead = f"127.0.0.1:{free_port()}"
    for bad in ("~/x;touch /tmp/pwned", "~/a\nb"):
        result = cli(kit, "status", "--host", dead, "--remote-dir", bad)
        assert result.exit_code == 1 and "--remote-dir" in result.output, result.output
        assert "connection refused" not in result.output


def test_lost_connection_message_names_the_cause(kit):
    from henet_edge.deploy.errors import ConnectError

    with _connect(kit) as t, pytest.raises(ConnectError) as exc:
        t.run("kill -9 $PPID; sleep 10")  # the session's sshd dies: the connection is gone
    assert "lost the SSH connection" in str(exc.value) and "()" not in str(exc.value)


def test_fleet_deploys_once_to_one_device_under_two_names_and_lists_errors_below(kit, tmp_path):
    ensure_current(kit, kit.bundle)
    s = kit.server
    kit.ssh_config.write_text(f"Host samepi\n  HostName 127.0.0.1\n  Port {s.port}\n"
                              f"  User {s.user}\n")
    dead = f"{s.user}@127.0.0.1:{free_port()}"
    try:
        result = deploy(kit, kit.bundle_b, "--host", "samepi", "--host", dead, "--jobs", "3")
    finally:
        kit.ssh_config.write_text("")
    assert result.exit_code == 1
    lines = result.output.splitlines()
    table_end = max(i for i, line in enumerate(lines) if "FAILED (below)" in line)
    assert any("same device as" in line for line in lines[:table_end + 1]), result.output
    assert any(line.startswith(f"{dead}: ") and "connection refused" in line
               for line in lines[table_end + 1:]), result.output
    assert kit.current() == bundle_id(kit.bundle_b)
    history = (kit.edge / "history.jsonl").read_text().splitlines()
    assert json.loads(history[-1])["bundle"] == bundle_id(kit.bundle_b)
    assert json.loads(history[-2])["bundle"] != bundle_id(kit.bundle_b)  # deployed once


def test_known_hosts_with_odd_lines_still_works_and_revoked_is_refused(kit, tmp_path):
    known = tmp_path / "known_hosts"
    pub = kit.server.host_key.with_suffix(".pub").read_text().split()
    known.write_text("garbage.example ssh-ed25519 AAAA%%%not-base64\n"
                     + kit.server.known_hosts_line)
    result = cli(kit, "status", "--host", kit.spec, known_hosts=known)
    assert result.exit_code == 0, result.output
    assert "known_hosts:1" in result.output and "skipped" in result.output
    known.write_text(f"@revoked * {pub[0]} {pub[1]}\n" + kit.server.known_hosts_line)
    result = cli(kit, "status", "--host", kit.spec, "--accept-new-host-key", known_hosts=known)
    assert result.exit_code == 1 and "REVOKED" in result.output


@pytest.mark.skipif(__import__("henet_edge.device.service").device.service.systemd_running(),
                    reason="this machine runs systemd; the test would start a real unit")
def test_deploy_service_writes_the_unit_and_says_it_cannot_start_without_systemd(kit):
    import shutil

    result = deploy(kit, kit.bundle, "--service", "--service-camera", "auto", "--json")
    assert result.exit_code == 0, result.output
    state = json.loads(result.stdout)["hosts"][0]["result"]["service"]
    unit = kit.edge / "henet-edge.service"
    assert state["installed"] and not state["systemd"] and state["unit"] == str(unit)
    assert "cannot be started here" in state["notes"][0]
    text = unit.read_text()
    assert f"ExecStart={kit.edge}/venv/bin/python -m henet_edge.cli serve" in text
    assert "--camera auto" in text and f"HENET_EDGE_HOME={kit.edge}" in text
    if shutil.which("systemd-analyze"):
        done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0 and "henet-edge.service" not in done.stderr, done.stderr

    result = deploy(kit, kit.bundle, "--service")  # the human output says it too
    assert result.exit_code == 0, result.output
    assert "systemd is not running there" in result.output
    shown = cli(kit, "status", "--host", kit.spec)
    assert shown.exit_code == 0 and "service: unit written to" in shown.output
    unit.unlink()
    shown = cli(kit, "status", "--host", kit.spec)
    assert "service: not installed" in shown.output
