"""scripts/emulated-pi and scripts/build-arm64-image: prerequisites and bad input, fast.

The scripts are run for real, with their test hooks standing in for the machine:
``HENET_EDGE_BINFMT_DIR`` (a temporary folder instead of /proc/sys/fs/binfmt_misc),
``HENET_EDGE_FAKE_UID`` (instead of ``id -u``) and ``HENET_EDGE_HOST_ARCH`` (instead of
``uname -m``), and a ``PATH`` of links to this machine's programs minus the ones a test
wants missing. Nothing here mounts, chroots or builds; the real thing is
tests/test_emulated_pi_e2e.py (``pytest -m slow``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import skip_unless_ci

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
EMULATED_PI = SCRIPTS / "emulated-pi"
BUILD_IMAGE = SCRIPTS / "build-arm64-image"
DEBIAN_HANDLER = """enabled
interpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P
flags: PF
offset 0
magic 7f454c460201010000000000000000000200b700
mask ffffffffffffff00fffffffffffffffffeffffff
"""

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def binfmt_dir(root: Path, state: str) -> Path:
    """A stand-in for /proc/sys/fs/binfmt_misc.

    ``unmounted`` (empty), ``no-handler``, ``disabled``, ``no-fix-binary`` or ``ok``.
    """
    folder = root / f"binfmt-{state}"
    folder.mkdir()
    if state == "unmounted":
        return folder
    (folder / "register").write_text("")
    (folder / "status").write_text("enabled\n")
    if state == "disabled":
        (folder / "qemu-aarch64").write_text(DEBIAN_HANDLER.replace("enabled", "disabled", 1))
    elif state == "no-fix-binary":
        (folder / "qemu-aarch64").write_text(DEBIAN_HANDLER.replace("flags: PF", "flags: P"))
    elif state == "ok":
        (folder / "qemu-aarch64").write_text(DEBIAN_HANDLER)
    return folder


def path_without(root: Path, *missing: str, stubs: tuple[str, ...] = ()) -> str:
    """A PATH with this machine's programs except ``missing``, plus no-op ``stubs``."""
    folder = root / ("bin-" + "-".join(sorted(missing)) + "+" + "-".join(sorted(stubs)))
    if folder.is_dir():
        return str(folder)
    folder.mkdir()
    for directory in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for name in os.listdir(directory):
            target = folder / name
            if name in missing or name in stubs or target.exists() or target.is_symlink():
                continue
            path = os.path.join(directory, name)
            if os.access(path, os.X_OK) and not os.path.isdir(path):
                target.symlink_to(path)
    for name in stubs:
        stub = folder / name
        stub.write_text("#!/bin/sh\nexit 0\n")
        stub.chmod(0o755)
    return str(folder)


@pytest.fixture(scope="module")
def bin_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("paths")


@pytest.fixture
def run(tmp_path, bin_root):
    def run(script: Path, *args: str, uid: int = 0, binfmt: str = "ok", arch: str = "x86_64",
            missing: tuple[str, ...] = (), stubs: tuple[str, ...] = ("debootstrap", "podman"),
            root: Path | None = None) -> subprocess.CompletedProcess:
        case = tmp_path / f"case{len(list(tmp_path.iterdir()))}"
        case.mkdir()
        env = {
            "PATH": path_without(bin_root, "qemu-aarch64-static", *missing, stubs=stubs),
            "HOME": str(case / "home"),
            "HENET_EDGE_FAKE_UID": str(uid),
            "HENET_EDGE_HOST_ARCH": arch,
            "HENET_EDGE_BINFMT_DIR": str(binfmt_dir(case, binfmt)),
            "HENET_EDGE_EMU_ROOT": str(root or case / "emu-root"),
            "HENET_EDGE_ARM64_BASE_ROOT": str(case / "base-root"),
        }
        return subprocess.run(["bash", str(script), *args], env=env, capture_output=True,
                              text=True, timeout=60)

    return run


def _shellcheck() -> str | None:
    local = Path(sys.executable).with_name("shellcheck")  # the dev extra's, in this venv
    return str(local) if local.exists() else shutil.which("shellcheck")


@skip_unless_ci(None if _shellcheck() else "shellcheck not installed (dev extra)")
def test_scripts_pass_shellcheck():
    proc = subprocess.run([_shellcheck(), str(EMULATED_PI), str(BUILD_IMAGE)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ------------------------------------------------------------------ scripts/emulated-pi
def test_all_present_check_passes(run):
    proc = run(EMULATED_PI, "check")
    assert proc.returncode == 0, proc.stderr
    assert "prerequisites present" in proc.stdout


def test_not_root_says_so_and_how(run, tmp_path):
    proc = run(EMULATED_PI, "build", "--root", str(tmp_path / "cache"), uid=1000)
    assert proc.returncode != 0
    assert "missing: root privileges" in proc.stderr
    assert f"sudo {EMULATED_PI} build --root {tmp_path / 'cache'}" in proc.stderr
    assert not (tmp_path / "cache").exists()  # nothing was created
    for command in ("start", "stop", "clean"):
        proc = run(EMULATED_PI, command, uid=1000)
        assert proc.returncode != 0 and "root privileges" in proc.stderr, command


def test_binfmt_not_mounted(run):
    proc = run(EMULATED_PI, "build", binfmt="unmounted")
    assert proc.returncode != 0
    assert "binfmt_misc is not mounted" in proc.stderr
    assert "mount binfmt_misc -t binfmt_misc " in proc.stderr
    # qemu-user-static is not on this PATH either: the package line comes too.
    assert "apt-get install qemu-user-static binfmt-support" in proc.stderr
    assert "cannot build" in proc.stderr


def test_binfmt_handler_missing(run):
    proc = run(EMULATED_PI, "start", binfmt="no-handler")
    assert proc.returncode != 0
    assert "no binfmt handler for arm64" in proc.stderr
    assert "apt-get install qemu-user-static binfmt-support" in proc.stderr


def test_binfmt_handler_disabled(run):
    proc = run(EMULATED_PI, "build", binfmt="disabled")
    assert proc.returncode != 0
    assert "update-binfmts --enable qemu-aarch64" in proc.stderr


def test_binfmt_handler_without_fix_binary_flag(run):
    proc = run(EMULATED_PI, "build", binfmt="no-fix-binary")
    assert proc.returncode != 0
    assert "F (fix-binary) flag" in proc.stderr


def test_not_root_and_no_binfmt_reports_both(run):
    proc = run(EMULATED_PI, "build", uid=1000, binfmt="unmounted")
    assert proc.returncode != 0
    assert "root privileges" in proc.stderr and "binfmt_misc is not mounted" in proc.stderr


def test_native_arm64_host_needs_no_binfmt(run):
    proc = run(EMULATED_PI, "check", binfmt="unmounted", arch="aarch64")
    assert proc.returncode == 0, proc.stderr
    assert "native arm64" in proc.stdout


def test_build_needs_debootstrap_but_start_does_not(run):
    proc = run(EMULATED_PI, "build", stubs=(), missing=("debootstrap",))
    assert proc.returncode != 0 and "apt-get install debootstrap" in proc.stderr
    proc = run(EMULATED_PI, "start", stubs=(), missing=("debootstrap",))
    assert "apt-get install debootstrap" not in proc.stderr
    assert "build it first" in proc.stderr  # the next problem: nothing built yet


def test_start_before_build(run, tmp_path):
    proc = run(EMULATED_PI, "start", root=tmp_path / "never-built")
    assert proc.returncode != 0
    assert "no arm64 root" in proc.stderr and "build" in proc.stderr
    assert not (tmp_path / "never-built").exists()


def test_status_and_stop_when_nothing_is_built(run, tmp_path):
    proc = run(EMULATED_PI, "status", uid=1000, root=tmp_path / "none")
    assert proc.returncode == 3
    assert "not built" in proc.stdout
    proc = run(EMULATED_PI, "stop", root=tmp_path / "none")
    assert proc.returncode == 0
    assert "nothing to stop" in proc.stderr


@pytest.mark.parametrize(("args", "code", "message"), [
    ((), 2, "usage"),
    (("launch",), 2, "unknown argument: launch"),
    (("build", "start"), 1, "one command at a time"),
    (("start", "--port", "ssh"), 1, "--port ssh: not a port number"),
    (("start", "--port", "70000"), 1, "--port 70000: not a port number"),
    (("start", "--port"), 1, "--port needs a number"),
    (("start", "--cpu", "max"), 1, "--cpu max: not a Raspberry Pi core"),
    (("build", "--root", "/"), 1, "refusing"),
])
def test_bad_arguments(run, args, code, message):
    proc = run(EMULATED_PI, *args)
    assert proc.returncode == code
    assert message in proc.stderr


def test_help_lists_the_commands(run):
    proc = run(EMULATED_PI, "--help")
    assert proc.returncode == 0
    for word in ("build", "start", "stop", "status", "--root", "--port", "HENET_EDGE_EMU_ROOT"):
        assert word in proc.stdout


# ------------------------------------------------------------------ scripts/build-arm64-image
def test_image_build_without_root_or_binfmt(run):
    proc = run(BUILD_IMAGE, "--tag", "x:y", uid=1000, binfmt="unmounted")
    assert proc.returncode != 0
    assert "root privileges" in proc.stderr and f"sudo {BUILD_IMAGE} --tag x:y" in proc.stderr
    assert "mount binfmt_misc -t binfmt_misc" in proc.stderr


def test_image_build_without_podman(run):
    proc = run(BUILD_IMAGE, binfmt="no-handler", stubs=("debootstrap",), missing=("podman",))
    assert proc.returncode != 0
    assert "apt-get install podman" in proc.stderr
    assert "apt-get install qemu-user-static binfmt-support" in proc.stderr


def test_image_build_rejects_a_folder_that_is_not_a_bundle(run, tmp_path):
    proc = run(BUILD_IMAGE, "--bundle", str(tmp_path))
    assert proc.returncode != 0
    assert "not a bundle" in proc.stderr


def fake_built_root(root: Path) -> Path:
    """A cache folder that looks built (the marker file), with nothing mounted or running."""
    (root / "rootfs" / "etc").mkdir(parents=True)
    (root / "rootfs" / "etc" / "henet-edge-emulated-pi").write_text("build 1\n")
    (root / "id_ed25519").write_text("key\n")
    return root


def test_status_of_a_stopped_root_and_clean_removes_it(run, tmp_path):
    root = fake_built_root(tmp_path / "built")
    proc = run(EMULATED_PI, "status", uid=1000, root=root)
    assert proc.returncode == 3
    assert "built, stopped" in proc.stdout and "start" in proc.stdout
    proc = run(EMULATED_PI, "clean", root=root)
    assert proc.returncode == 0, proc.stderr
    assert "sshd was not running" in proc.stderr
    assert not root.exists()


def test_a_stale_pid_file_is_not_a_running_sshd(run, tmp_path):
    root = fake_built_root(tmp_path / "stale")
    (root / "rootfs" / "run").mkdir()
    # This test's own process: alive, but not this root's sshd; stop must not touch it.
    (root / "rootfs" / "run" / "henet-edge-sshd.pid").write_text(f"{os.getpid()}\n")
    proc = run(EMULATED_PI, "status", uid=1000, root=root)
    assert proc.returncode == 3 and "stopped" in proc.stdout
    proc = run(EMULATED_PI, "stop", root=root)
    assert proc.returncode == 0 and "sshd was not running" in proc.stderr
