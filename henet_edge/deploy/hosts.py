"""``--host`` values and ``~/.ssh/config``: where to connect, as whom, with which keys.

A host is written like OpenSSH takes it: ``host``, ``user@host``,
``user@host:port``, ``[v6addr]:port`` or ``ssh://user@host:port``, or an alias
from the SSH config file, whose ``HostName``, ``User``, ``Port``,
``IdentityFile``, ``IdentitiesOnly``, ``ProxyJump``, ``HostKeyAlias``,
``UserKnownHostsFile`` and ``StrictHostKeyChecking accept-new`` are honoured.
Values typed in ``--host`` win over the config file, as with ``ssh``.
"""

from __future__ import annotations

import getpass
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DeployError

DEFAULT_CONFIG = "~/.ssh/config"
DEFAULT_IDENTITIES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")


@dataclass(frozen=True)
class HostSpec:
    """A ``--host`` value split into its parts (``None`` where not given)."""

    host: str
    user: str | None = None
    port: int | None = None

    @property
    def text(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and self.port else self.host
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"{user}{host}{port}"


@dataclass
class HostTarget:
    """Everything needed to open one SSH connection."""

    label: str                      # what the user typed, for messages and tables
    hostname: str
    port: int = 22
    user: str = field(default_factory=getpass.getuser)
    identity_files: list[str] = field(default_factory=list)
    identities_only: bool = False
    proxy_jump: list[str] = field(default_factory=list)
    host_key_alias: str | None = None
    known_hosts_files: list[str] = field(default_factory=list)
    accept_new: bool = False        # from StrictHostKeyChecking accept-new

    @property
    def address(self) -> str:
        host = f"[{self.hostname}]" if ":" in self.hostname else self.hostname
        return f"{self.user}@{host}:{self.port}"


def _port(text: str, spec: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise DeployError(f"--host {spec!r}: port must be a number from 1 to 65535, "
                          f"got {text!r}")
    return int(text)


def parse_host_spec(spec: str) -> HostSpec:
    """``[ssh://][user@]host[:port]`` (IPv6 in brackets when a port follows)."""
    text = spec.strip()
    if text.startswith("ssh://"):
        text = text[len("ssh://"):].rstrip("/")
    if not text:
        raise DeployError("--host is empty")
    user = None
    if "@" in text:
        user, _, text = text.rpartition("@")
        if not user:
            raise DeployError(f"--host {spec!r}: empty user name before '@'")
    port = None
    if text.startswith("["):
        match = re.fullmatch(r"\[([^\]]+)\](?::(.*))?", text)
        if not match:
            raise DeployError(f"--host {spec!r}: unbalanced brackets")
        host = match.group(1)
        if match.group(2) is not None:
            port = _port(match.group(2), spec)
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = _port(port_text, spec)
    else:
        host = text  # a bare name, or a bare IPv6 address without a port
    if not host or any(c.isspace() for c in host) or "/" in host:
        raise DeployError(f"--host {spec!r}: not a host name")
    return HostSpec(host, user, port)


def load_ssh_config(path: str | Path | None):
    """A ``paramiko.SSHConfig`` for ``path`` (default ``~/.ssh/config``; missing is empty)."""
    import paramiko

    config_path = Path(os.path.expanduser(str(path or DEFAULT_CONFIG)))
    if path is not None and not config_path.exists():
        raise DeployError(f"--ssh-config {path}: no such file")
    if not config_path.exists():
        return paramiko.SSHConfig()
    try:
        return paramiko.SSHConfig.from_path(str(config_path))
    except Exception as exc:  # paramiko raises several kinds for a bad file
        raise DeployError(f"{config_path}: cannot parse SSH config ({exc})") from None


def _as_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


def resolve_host(spec: str, config=None, *, identities: list[str] | None = None) -> HostTarget:
    """Combine a ``--host`` value with the SSH config and ``--identity`` files."""
    parsed = parse_host_spec(spec)
    entry = config.lookup(parsed.host) if config is not None else {}
    hostname = entry.get("hostname", parsed.host)
    port = parsed.port or (_port(str(entry["port"]), spec) if entry.get("port") else 22)
    user = parsed.user or entry.get("user") or getpass.getuser()
    files = [os.path.expanduser(p) for p in identities or []]
    files += [os.path.expanduser(p) for p in _as_list(entry.get("identityfile"))]
    jumps = []
    for part in _as_list(entry.get("proxyjump")):
        jumps += [j.strip() for j in part.split(",") if j.strip()]
    if [j.lower() for j in jumps] == ["none"]:
        jumps = []
    known = []
    for item in _as_list(entry.get("userknownhostsfile")):
        known += [os.path.expanduser(p) for p in item.split()]
    strict = str(entry.get("stricthostkeychecking", "")).lower()
    return HostTarget(
        label=spec,
        hostname=hostname,
        port=port,
        user=user,
        identity_files=files,
        identities_only=str(entry.get("identitiesonly", "no")).lower() == "yes",
        proxy_jump=jumps,
        host_key_alias=entry.get("hostkeyalias"),
        known_hosts_files=known,
        accept_new=strict == "accept-new",
    )


def read_hosts_file(path: str | Path) -> list[str]:
    """Host values from a file, one per line; blank lines and ``#`` comments ignored."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DeployError(f"--hosts-file {path}: cannot read it ({exc})") from None
    hosts = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            hosts.append(line)
    if not hosts:
        raise DeployError(f"--hosts-file {path}: no hosts in it")
    return hosts
