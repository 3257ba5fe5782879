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
import hmac
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import HostKeyError

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
SYSTEM_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")

_TYPE_LABELS = {"ssh-ed25519": "ED25519", "ssh-rsa": "RSA", "ssh-dss": "DSA"}


def fingerprint(key) -> str:
    """OpenSSH's ``SHA256:<base64, no padding>`` fingerprint of a paramiko key (or line)."""
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


def known_hosts_name(hostname: str, port: int, alias: str | None = None) -> str:
    """The name known_hosts files use: ``host`` on port 22, else ``[host]:port``; a
    ``HostKeyAlias`` as it is, whatever the port (as OpenSSH's ssh looks it up)."""
    if alias:
        return alias
    return hostname if port == 22 else f"[{hostname}]:{port}"


MARKERS = ("@revoked", "@cert-authority")


@dataclass
class KnownHostLine:
    """One parsed known_hosts line: ``[@marker] patterns keytype base64 [comment]``."""

    path: Path
    number: int
    marker: str | None
    hosts: str
    key_type: str
    blob: bytes

    def get_name(self) -> str:
        return self.key_type

    def asbytes(self) -> bytes:
        return self.blob


def parse_known_hosts_line(line: str):
    """``((marker, hosts, key_type, blob), None)``, ``(None, problem)``, or
    ``(None, None)`` for a blank or comment line."""
    fields = line.split()
    if not fields or fields[0].startswith("#"):
        return None, None
    marker = None
    if fields[0].startswith("@"):
        marker = fields.pop(0)
        if marker not in MARKERS:
            return None, f"unknown marker {marker}"
    if len(fields) < 3:
        return None, "expected 'hosts keytype base64-key'"
    hosts, key_type, data = fields[:3]
    try:
        blob = base64.b64decode(data, validate=True)
    except (ValueError, TypeError):
        return None, f"the {key_type} key is not valid base64"
    try:  # the blob starts with its own key type (an SSH string)
        size = int.from_bytes(blob[:4], "big")
        inner = blob[4:4 + size].decode("ascii")
    except UnicodeDecodeError:
        inner = ""
    if inner != key_type:
        return None, f"the key data is not a {key_type} key"
    return (marker, hosts, key_type, blob), None


def _pattern_match(pattern: str, name: str) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, name, flags=re.IGNORECASE) is not None


def _hashed_match(pattern: str, name: str) -> bool:
    try:
        _, _, salt, digest = pattern.split("|")
        mac = hmac.new(base64.b64decode(salt), name.encode(), hashlib.sha1).digest()
        return hmac.compare_digest(mac, base64.b64decode(digest))
    except (ValueError, TypeError):
        return False


def hosts_match(patterns: str, name: str) -> bool:
    """OpenSSH's rule: some pattern matches ``name`` and no negated (``!``) one does."""
    if patterns.startswith("|1|"):
        return _hashed_match(patterns, name)
    hit = False
    for pattern in patterns.split(","):
        negated = pattern.startswith("!")
        if _pattern_match(pattern[1:] if negated else pattern, name):
            if negated:
                return False
            hit = True
    return hit


@dataclass
class KnownHosts:
    """The known_hosts files consulted for a connection, and the one written to."""

    user_file: Path
    extra_files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

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

    def _entries(self, path: Path) -> list[KnownHostLine]:
        if not path.is_file():
            return []
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise HostKeyError(f"{path}: cannot read known hosts ({exc})") from None
        entries = []
        for number, line in enumerate(text.splitlines(), 1):
            entry, problem = parse_known_hosts_line(line)
            if problem:
                self._warn(f"{path}:{number}: {problem}; line skipped (as OpenSSH does)")
            elif entry is not None:
                entries.append(KnownHostLine(path, number, *entry))
        return entries

    def _warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def matching(self, name: str) -> list[KnownHostLine]:
        """Every line of every file whose host patterns match ``name``."""
        return [e for path in [self.user_file, *self.extra_files]
                for e in self._entries(path) if hosts_match(e.hosts, name)]

    def lookup(self, name: str) -> list[tuple[Path, KnownHostLine]]:
        """Every recorded (plain, not ``@``-marked) key for ``name``, with its file."""
        found = []
        for entry in self.matching(name):
            if entry.marker == "@cert-authority":
                self._warn(f"{entry.path}:{entry.number}: @cert-authority (host certificates) "
                           f"is not supported; line ignored")
            elif entry.marker is None:
                found.append((entry.path, entry))
        return found

    def revoked(self, key) -> KnownHostLine | None:
        """The ``@revoked`` line naming ``key`` (whatever its host patterns), if any."""
        blob = key.asbytes()
        for path in [self.user_file, *self.extra_files]:
            for entry in self._entries(path):
                if entry.marker == "@revoked" and entry.blob == blob:
                    return entry
        return None

    def plain_host_lines(self, hostname: str) -> list[KnownHostLine]:
        """Lines for ``hostname`` without a port (they only match port 22, as in OpenSSH)."""
        return [e for e in self.matching(hostname) if e.marker is None]

    def preferred_types(self, name: str) -> list[str]:
        """Key types already recorded for ``name`` (to ask the server for those first)."""
        return list(dict.fromkeys(entry.key_type for _, entry in self.lookup(name)))

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
    revoked = known.revoked(key)
    if revoked is not None:
        _log_warnings(known, log)
        raise HostKeyError(
            f"REVOKED HOST KEY for {display}: it offers {describe_key(key)}, which "
            f"{revoked.path}:{revoked.number} marks @revoked. Refusing to connect (the key "
            f"may be stolen; the device needs new host keys)")
    recorded = known.lookup(name)
    _log_warnings(known, log)
    if any(k.asbytes() == key.asbytes() for _, k in recorded):
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
        hint = ""
        if name.startswith("["):
            host = name[1:name.index("]")]
            plain = known.plain_host_lines(host)
            if plain:
                hint = (f" ({plain[0].path}:{plain[0].number} records {host} without a port, "
                        f"which OpenSSH applies to port 22 only; for this port the line must "
                        f"start with {name})")
        raise HostKeyError(
            f"host {display} is not known{hint}: it offers {key_label(key)} key fingerprint "
            f"{fingerprint(key)}. Compare it with `ssh-keygen -lf "
            f"/etc/ssh/ssh_host_{key_label(key).lower()}_key.pub` on the device, then re-run "
            f"with --accept-new-host-key to trust it and record it in {known.user_file}")
    known.add(name, key)
    if log is not None:
        log(f"recorded {describe_key(key)} for {name} in {known.user_file}")


def _log_warnings(known: KnownHosts, log) -> None:
    if log is not None:
        for message in known.warnings:
            log(f"warning: {message}")
