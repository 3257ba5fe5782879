"""A real OpenSSH server on 127.0.0.1 as the deploy target, and bundle variants.

:class:`SSHServer` runs Debian's ``/usr/sbin/sshd -D -e -f <config>`` on a
free loopback port with a generated ed25519 host key and a generated user
key in its own ``authorized_keys``; it authenticates the current user (root
is fine: ``PermitRootLogin prohibit-password``). Nothing is faked at the SSH
layer. The "device" gets an isolated home: sshd's ``SetEnv HOME=...`` makes
``~`` (and so ``~/.henet-edge``, pip's cache) a temporary folder, and
``PIP_CONFIG_FILE=/dev/null`` keeps this machine's pip configuration out of
the device's installs. The only thing outside temporary folders is
``/run/sshd``, OpenSSH's privilege-separation directory, which sshd refuses to
start without when run as root; it is created (empty, mode 0755) if missing,
as the openssh-server package's service would.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"


def sshd_missing_reason() -> str | None:
    if not Path(SSHD).is_file():
        return f"{SSHD} not found: apt-get install openssh-server"
    if not Path(SSH_KEYGEN).is_file():
        return "ssh-keygen not found: apt-get install openssh-client"
    return None


def keygen(path: Path, *, passphrase: str = "", comment: str = "test") -> Path:
    subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", passphrase, "-C", comment,
                    "-f", str(path)], check=True)
    return path


def keygen_fingerprint(pub: Path) -> str:
    """``SHA256:...`` as OpenSSH's ssh-keygen prints it."""
    out = subprocess.run([SSH_KEYGEN, "-l", "-E", "sha256", "-f", str(pub)], check=True,
                         capture_output=True, text=True).stdout
    return out.split()[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SSHServer:
    def __init__(self, root: Path):
        self.root = root
        self.user = getpass.getuser()
        self.home = root / "device-home"
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def start(self) -> SSHServer:
        root = self.root
        root.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(exist_ok=True)
        self.host_key = keygen(root / "ssh_host_ed25519_key", comment="host")
        self.user_key = keygen(root / "user_key", comment="user")
        shutil.copy(root / "user_key.pub", root / "authorized_keys")
        if os.geteuid() == 0 and not Path("/run/sshd").is_dir():
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        for _ in range(5):
            self.port = free_port()
            config = root / "sshd_config"
            config.write_text(f"""\
Port {self.port}
ListenAddress 127.0.0.1
HostKey {self.host_key}
PidFile {root}/sshd.pid
AuthorizedKeysFile {root}/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
UsePAM no
AllowTcpForwarding yes
Subsystem sftp internal-sftp
SetEnv HOME={self.home} PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1
LogLevel VERBOSE
""")
            self.log = open(root / "sshd.log", "ab")  # noqa: SIM115 - closed in stop()
            self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)],
                                         stdout=self.log, stderr=subprocess.STDOUT)
            if self._wait_ready():
                return self
            self.stop()
        raise RuntimeError("sshd did not start: " + (root / "sshd.log").read_text()[-2000:])

    def _wait_ready(self, timeout: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-"):
                        return True
            except OSError:
                time.sleep(0.05)
        return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if getattr(self, "log", None):
            self.log.close()

    @property
    def spec(self) -> str:
        return f"{self.user}@127.0.0.1:{self.port}"

    @property
    def known_hosts_line(self) -> str:
        key_type, key_b64 = (self.root / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        return f"[127.0.0.1]:{self.port} {key_type} {key_b64}\n"

    @property
    def edge_home(self) -> Path:
        return self.home / ".henet-edge"


class NotSSHServer:
    """A TCP server on a loopback port that answers like a web server, not SSH."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    def close(self) -> None:
        self.sock.close()


def make_wheelhouse(wheel: Path, dest: Path, device_python: str) -> subprocess.CompletedProcess:
    """``pip download`` the wheel's ``[device]`` dependencies for the device's Python
    (``"3.11"``...) into ``dest``: what ``--wheelhouse`` uploads to an offline device."""
    import sys

    command = [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(dest),
               f"{wheel}[device]"]
    if device_python != f"{sys.version_info[0]}.{sys.version_info[1]}":
        command += ["--python-version", device_python, "--only-binary=:all:"]
    return subprocess.run(command, capture_output=True, text=True)


# ------------------------------------------------------------------ bundle variants
def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def bundle_variant(src: Path, dst: Path, *, name: str | None = None,
                   extra: dict[str, bytes] | None = None, golden_edit=None) -> Path:
    """A copy of bundle ``src`` with changes, its manifest hashes recomputed (so valid)."""
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    if name is not None:
        manifest["name"] = name
    for rel, data in (extra or {}).items():
        (dst / rel).write_bytes(data)
        manifest["files"][rel] = None
    if golden_edit is not None:
        golden_path = dst / manifest["golden"]
        golden = json.loads(golden_path.read_text())
        golden_edit(golden)
        golden_path.write_text(json.dumps(golden, indent=1))
    manifest["files"] = {rel: _sha256(dst / rel) for rel in manifest["files"]}
    (dst / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return dst


def bundle_id(path: Path) -> str:
    return _sha256(Path(path) / "manifest.json")


def flip_byte(path: Path, offset: int = -100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
