"""Host key checking like OpenSSH: known_hosts files, SHA256 fingerprints, accept-new.

An unknown host is refused with its fingerprint in OpenSSH's form
(``ED25519 SHA256:...``, the same as ``ssh-keygen -lf``) and the flag that
trusts it; ``--accept-new-host-key`` records it in the user's known_hosts
file the way OpenSSH's ``StrictHostKeyChecking accept-new`` does. A key that
differs from a recorded one is always refused. Nothing here ever adds a key
silently (no ``AutoAddPolicy``).
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import HostKeyError

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
SYSTEM_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")

_TYPE_LABELS = {"ssh-ed25519": "ED25519", "ssh-rsa": "RSA", "ssh-dss": "DSA"}


def fingerprint(key) -> str:
    """OpenSSH's ``SHA256:<base64, no padding>`` fingerprint of a paramiko key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def key_label(key) -> str:
    """``ED25519``, ``ECDSA``, ``RSA``... as OpenSSH names key types in messages."""
    name = key.get_name()
    if name.startswith("ecdsa-"):
        return "ECDSA"
    return _TYPE_LABELS.get(name, name)


def describe_key(key) -> str:
    return f"{key_label(key)} {fingerprint(key)}"


def known_hosts_name(hostname: str, port: int) -> str:
    """The name known_hosts files use: ``host`` on port 22, else ``[host]:port``."""
    return hostname if port == 22 else f"[{hostname}]:{port}"


@dataclass
class KnownHosts:
    """The known_hosts files consulted for a connection, and the one written to."""

    user_file: Path
    extra_files: list[Path] = field(default_factory=list)

    @classmethod
    def default(cls, known_hosts: str | Path | None = None,
                config_files: list[str] | None = None) -> KnownHosts:
        """``--known-hosts FILE`` (read and written) if given, else the SSH config's
        ``UserKnownHostsFile`` or ``~/.ssh/known_hosts``; system files are read too."""
        if known_hosts:
            user = Path(os.path.expanduser(str(known_hosts)))
            return cls(user, [])
        files = [Path(os.path.expanduser(p)) for p in config_files or []]
        user = files[0] if files else Path(os.path.expanduser(DEFAULT_KNOWN_HOSTS))
        extra = files[1:] + [Path(p) for p in SYSTEM_KNOWN_HOSTS]
        return cls(user, extra)

    def _load(self, path: Path):
        import paramiko

        keys = paramiko.HostKeys()
        if path.is_file():
            try:
                keys.load(str(path))
            except (OSError, UnicodeDecodeError) as exc:
                raise HostKeyError(f"{path}: cannot read known hosts ({exc})") from None
        return keys

    def lookup(self, name: str) -> list[tuple[Path, object]]:
        """Every recorded key for ``name``, with the file it came from."""
        found = []
        for path in [self.user_file, *self.extra_files]:
            entry = self._load(path).lookup(name)
            if entry:
                found += [(path, entry[key_type]) for key_type in entry]
        return found

    def preferred_types(self, name: str) -> list[str]:
        """Key types already recorded for ``name`` (to ask the server for those first)."""
        return list(dict.fromkeys(key.get_name() for _, key in self.lookup(name)))

    def add(self, name: str, key) -> None:
        """Append ``name keytype base64`` to the user file (as OpenSSH's accept-new)."""
        path = self.user_file
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        line = f"{name} {key.get_name()} {key.get_base64()}\n"
        needs_newline = path.is_file() and path.stat().st_size > 0 and \
            not path.read_bytes().endswith(b"\n")
        with open(path, "a", encoding="ascii") as f:
            if needs_newline:
                f.write("\n")
            f.write(line)


def check_host_key(known: KnownHosts, name: str, key, *, accept_new: bool,
                   display: str, log=None) -> None:
    """Accept ``key`` for ``name`` only if recorded, or new and ``accept_new``.

    Raises :class:`HostKeyError` for an unknown key (without ``accept_new``)
    and, always, for a key that differs from a recorded key of the same host.
    """
    recorded = known.lookup(name)
    if any(k.get_name() == key.get_name() and k.asbytes() == key.asbytes()
           for _, k in recorded):
        return
    if recorded:
        path, old = next(((p, k) for p, k in recorded if k.get_name() == key.get_name()),
                         recorded[0])
        raise HostKeyError(
            f"WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED for {display}! "
            f"{path} records {describe_key(old)} for {name}, but the host now offers "
            f"{describe_key(key)}. Someone may be intercepting the connection, or the device "
            f"was reinstalled. Refusing to connect; if you are sure the change is expected, "
            f"remove the old key with `ssh-keygen -R '{name}'"
            + (f" -f {path}" if path != Path(os.path.expanduser(DEFAULT_KNOWN_HOSTS)) else "")
            + "` and connect again")
    if not accept_new:
        raise HostKeyError(
            f"host {display} is not known: it offers {key_label(key)} key fingerprint "
            f"{fingerprint(key)}. Compare it with `ssh-keygen -lf "
            f"/etc/ssh/ssh_host_{key_label(key).lower()}_key.pub` on the device, then re-run "
            f"with --accept-new-host-key to trust it and record it in {known.user_file}")
    known.add(name, key)
    if log is not None:
        log(f"recorded {describe_key(key)} for {name} in {known.user_file}")
