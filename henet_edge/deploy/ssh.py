"""SSH to a device with paramiko, the way OpenSSH would connect.

:func:`connect` resolves ``--host`` through the SSH config, opens the TCP
connection (through ``ProxyJump`` hosts if configured), checks the host key
against known_hosts *before* authenticating, then authenticates with keys
only: ssh-agent keys, ``--identity`` files, ``IdentityFile`` entries, or the
default ``~/.ssh/id_*`` files. Passwords and passphrases are never asked for
or accepted; a locked key is reported with the ``ssh-add`` line that unlocks
it.
"""

from __future__ import annotations

import contextlib
import os
import select
import shlex
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .connection import CommandResult, Connection, HeldCommand, Log, Progress, Sink
from .errors import ConnectError, DeployError, RemoteCommandError
from .hostkeys import KnownHosts, check_host_key, known_hosts_name
from .hosts import DEFAULT_IDENTITIES, HostTarget, load_ssh_config, resolve_host

CONNECT_TIMEOUT = 10.0  # seconds for the TCP connection and the SSH banner



@dataclass
class ConnectOptions:
    """How to reach hosts: the CLI's connection options."""

    ssh_config: str | None = None
    identities: list[str] = field(default_factory=list)
    known_hosts: str | None = None
    accept_new_host_key: bool = False
    connect_timeout: float = CONNECT_TIMEOUT
    use_agent: bool = True
    verbose: bool = False           # let paramiko's own log reach stderr


def _quiet_paramiko(verbose: bool) -> None:
    """paramiko logs tracebacks from its thread to stderr; only show them with --verbose."""
    import logging

    logger = logging.getLogger("paramiko")
    if verbose:
        logger.propagate = True
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.DEBUG)
    else:
        logger.propagate = False
        if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
            logger.addHandler(logging.NullHandler())


def _addresses(hostname: str, port: int, display: str) -> list[tuple]:
    try:
        return socket.getaddrinfo(hostname, port, 0, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConnectError(f"{display}: cannot resolve host name {hostname!r} ({reason})") \
            from None


def check_resolvable(spec: str, options: ConnectOptions | None = None) -> None:
    """Fail now, as :func:`connect` would, when ``spec``'s first hop has a name that does not
    resolve: for commands with slow work (a conversion, a wheel build) before they connect."""
    options = options or ConnectOptions()
    config = load_ssh_config(options.ssh_config)
    target = resolve_host(spec, config, identities=options.identities)
    first = resolve_host(target.proxy_jump[0], config) if target.proxy_jump else target
    _addresses(first.hostname, first.port, spec)


def _open_socket(hostname: str, port: int, timeout: float, display: str) -> socket.socket:
    infos = _addresses(hostname, port, display)
    last: OSError | None = None
    for family, kind, proto, _, addr in infos:
        sock = socket.socket(family, kind, proto)
        sock.settimeout(timeout)
        try:
            sock.connect(addr)
            return sock
        except OSError as exc:
            last = exc
            sock.close()
    where = f"{hostname}:{port}"
    if isinstance(last, ConnectionRefusedError):
        raise ConnectError(f"{display}: connection refused by {where} (nothing listens on port "
                           f"{port}: wrong port, or sshd not running)")
    if isinstance(last, TimeoutError):
        raise ConnectError(f"{display}: timed out after {timeout:g}s connecting to {where} "
                           f"(device off, unreachable, or a firewall drops the connection)")
    raise ConnectError(f"{display}: cannot reach {where} "
                       f"({getattr(last, 'strerror', None) or last})")


def _prefer_key_types(transport, preferred: list[str]) -> None:
    """Ask the server for the host key type(s) already recorded, as OpenSSH does."""
    if not preferred:
        return
    options = transport.get_security_options()
    available = list(options.key_types)
    wanted: list[str] = []
    for name in preferred:
        if name == "ssh-rsa":
            wanted += ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"]
        else:
            wanted.append(name)
    wanted = [k for k in dict.fromkeys(wanted) if k in available]
    if wanted:
        options.key_types = wanted + [k for k in available if k not in wanted]


def _load_keys(target: HostTarget, options: ConnectOptions):
    """``(source, key)`` pairs to offer, and the locked key files found on the way."""
    import paramiko

    keys: list[tuple[str, object]] = []
    locked: list[str] = []
    if options.use_agent and not target.identities_only:
        with contextlib.suppress(paramiko.SSHException, OSError):
            keys += [(f"ssh-agent key {k.get_name()}", k) for k in paramiko.Agent().get_keys()]
    explicit = [os.path.expanduser(p) for p in options.identities]
    for path in explicit:
        if not os.path.isfile(path):
            raise ConnectError(f"--identity {path}: no such key file")
    files = target.identity_files or [os.path.expanduser(p) for p in DEFAULT_IDENTITIES]
    for path in dict.fromkeys(files):
        if not os.path.isfile(path):
            continue
        try:
            key = paramiko.PKey.from_path(path)
        except paramiko.PasswordRequiredException:
            locked.append(path)
            continue
        except (paramiko.SSHException, ValueError, OSError, TypeError) as exc:
            text = str(exc).lower()
            if "password" in text or "passphrase" in text or "encrypted" in text:
                locked.append(path)  # cryptography's wording for OpenSSH-format keys
                continue
            if path in explicit:
                raise ConnectError(f"{path}: not a usable SSH private key ({exc})") from None
            continue
        keys.append((path, key))
    return keys, locked


def _authenticate(transport, target: HostTarget, options: ConnectOptions, display: str) -> None:
    import paramiko

    keys, locked = _load_keys(target, options)
    tried: list[str] = []
    for source, key in keys:
        try:
            transport.auth_publickey(target.user, key)
        except paramiko.BadAuthenticationType as exc:
            allowed = ", ".join(exc.allowed_types) or "nothing"
            raise ConnectError(
                f"{display}: the server does not accept SSH keys (it allows: {allowed}); "
                f"henet-edge never uses passwords: install your public key on the device "
                f"with `ssh-copy-id -p {target.port} {target.user}@{target.hostname}`") from None
        except paramiko.AuthenticationException:
            tried.append(source)
            continue
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise ConnectError(f"{display}: connection lost while authenticating ({exc})") \
                from None
        if transport.is_authenticated():
            return
    if locked and not keys:
        raise ConnectError(
            f"{display}: SSH key {locked[0]} is locked with a passphrase and ssh-agent does not "
            f"hold it: unlock it once with `ssh-add {locked[0]}` (henet-edge never asks for "
            f"passphrases or passwords)")
    if not tried:
        raise ConnectError(f"{display}: no SSH key to offer: pass --identity FILE, load a key "
                           f"into ssh-agent, or create one with `ssh-keygen -t ed25519`")
    hint = (f"; {', '.join(locked)} is locked: `ssh-add` it to use it" if locked else "")
    raise ConnectError(
        f"authentication failed for {target.user}@{target.hostname}:{target.port}: the "
        f"server accepted none of the keys offered ({', '.join(tried)}){hint}")


def _start(sock, target: HostTarget, known: KnownHosts, options: ConnectOptions,
           display: str, log: Log | None):
    import paramiko

    transport = paramiko.Transport(sock)
    transport.banner_timeout = options.connect_timeout
    transport.handshake_timeout = max(options.connect_timeout, 15.0)
    name = known_hosts_name(target.hostname, target.port, target.host_key_alias)
    _prefer_key_types(transport, known.preferred_types(name))
    try:
        # start_client returns quietly when its own timeout runs out first, so give it longer
        # than the banner and handshake timeouts and check that a key exchange happened.
        transport.start_client(timeout=transport.handshake_timeout + options.connect_timeout)
        if transport.host_key is None:
            raise paramiko.SSHException(
                transport.get_exception() or "no key exchange within the timeout")
    except (paramiko.SSHException, EOFError, OSError) as exc:
        transport.close()
        text = str(exc) or type(exc).__name__
        if not transport.remote_version:
            raise ConnectError(f"{display}: {target.hostname}:{target.port} does not speak SSH "
                               f"(no SSH banner: wrong port, or another service listens "
                               f"there)") from None
        if "banner" in text.lower():
            raise ConnectError(f"{display}: {target.hostname}:{target.port} does not answer "
                               f"like an SSH server (wrong port?): {text}") from None
        raise ConnectError(f"{display}: SSH handshake with {target.hostname}:{target.port} "
                           f"failed ({text})") from None
    try:
        check_host_key(known, name, transport.get_remote_server_key(),
                       accept_new=options.accept_new_host_key or target.accept_new,
                       display=display, log=log)
        _authenticate(transport, target, options, display)
    except BaseException:
        transport.close()
        raise
    transport.set_keepalive(15)
    return transport


def connect(spec: str, options: ConnectOptions | None = None, *,
            log: Log | None = None) -> SSHConnection:
    """An authenticated :class:`SSHConnection` to ``spec`` (a ``--host`` value)."""
    import paramiko

    options = options or ConnectOptions()
    _quiet_paramiko(options.verbose)
    config = load_ssh_config(options.ssh_config)
    target = resolve_host(spec, config, identities=options.identities)
    hops = [resolve_host(j, config, identities=options.identities)
            for j in target.proxy_jump] + [target]
    transports = []
    sock = None
    try:
        for i, hop in enumerate(hops):
            display = spec if hop is target else f"{spec} (via jump host {hop.label})"
            known = KnownHosts.default(options.known_hosts, hop.known_hosts_files)
            if i == 0:
                sock = _open_socket(hop.hostname, hop.port, options.connect_timeout, display)
            else:
                try:
                    sock = transports[-1].open_channel(
                        "direct-tcpip", (hop.hostname, hop.port), ("127.0.0.1", 0),
                        timeout=options.connect_timeout)
                except (paramiko.SSHException, EOFError, OSError) as exc:
                    raise ConnectError(f"{display}: jump host {hops[i - 1].label} could not "
                                       f"connect to {hop.hostname}:{hop.port} ({exc})") from None
            transports.append(_start(sock, hop, known, options, display, log))
            sock = None
    except BaseException:
        if sock is not None:
            sock.close()
        for t in reversed(transports):
            t.close()
        raise
    return SSHConnection(transports[-1], name=spec, jumps=transports[:-1], target=target)


def _take_block(ready: Callable[[], bool], recv: Callable[[int], bytes],
                blocks: list[bytes], sink: Sink | None) -> bool:
    """Read one waiting block of a channel's stream into ``blocks`` and ``sink``; False if none."""
    if not ready():
        return False
    block = recv(65536)
    blocks.append(block)
    if sink is not None:
        sink(block)
    return True


class SSHConnection(Connection):
    """Commands over SSH exec channels, files over SFTP."""

    def __init__(self, transport, *, name: str, jumps=(), target: HostTarget | None = None):
        self.transport = transport
        self.name = name
        self.jumps = list(jumps)
        self.target = target
        self._sftp = None

    def _lost(self, exc: BaseException) -> ConnectError:
        reason = str(exc) or type(exc).__name__
        return ConnectError(f"{self.name}: lost the SSH connection ({reason})")

    def host_key_fingerprint(self) -> str:
        """The device's SHA256 host key fingerprint: one device, one key."""
        from .hostkeys import fingerprint

        return fingerprint(self.transport.get_remote_server_key())

    def start(self, command: str) -> HeldCommand:
        import paramiko

        try:
            chan = self.transport.open_session(timeout=30)
            chan.exec_command("/bin/sh -c " + shlex.quote(command))
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise self._lost(exc) from None
        return _SSHHeld(chan)

    def run(self, command: str, *, input: bytes | None = None, timeout: float | None = None,
            stdout_sink: Sink | None = None, stderr_sink: Sink | None = None) -> CommandResult:
        import paramiko

        deadline = None if timeout is None else time.monotonic() + timeout
        out: list[bytes] = []
        err: list[bytes] = []
        try:
            chan = self.transport.open_session(timeout=30)
            try:
                chan.exec_command("/bin/sh -c " + shlex.quote(command))
                if input:
                    chan.sendall(input)
                chan.shutdown_write()
                while True:
                    got_out = _take_block(chan.recv_ready, chan.recv, out, stdout_sink)
                    got_err = _take_block(chan.recv_stderr_ready, chan.recv_stderr, err,
                                          stderr_sink)
                    if got_out or got_err:
                        continue
                    # Read to EOF, not to the exit status: sshd may send the status
                    # before the last of the output.
                    if chan.eof_received or chan.closed:
                        if not (chan.recv_ready() or chan.recv_stderr_ready()):
                            break
                        continue
                    if not self.transport.is_active():
                        raise ConnectError(f"{self.name}: lost the SSH connection")
                    if deadline is not None and time.monotonic() > deadline:
                        raise RemoteCommandError(
                            f"{self.name}: command timed out after {timeout:g}s")
                    select.select([chan], [], [], 0.2)
                status = chan.recv_exit_status()
            finally:
                chan.close()
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise self._lost(exc) from None
        if status == -1 and not self.transport.is_active():
            raise ConnectError(f"{self.name}: lost the SSH connection")
        return CommandResult(command, status, b"".join(out), b"".join(err))

    def _client(self):
        import paramiko

        if self._sftp is None:
            try:
                self._sftp = paramiko.SFTPClient.from_transport(self.transport)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise DeployError(f"{self.name}: cannot open SFTP to copy files (is the sftp "
                                  f"subsystem enabled in sshd_config?): {exc}") from None
        return self._sftp

    def put(self, local: Path, remote: str, *, progress: Progress | None = None) -> None:
        import paramiko

        done = [0]

        def callback(sent: int, _total: int) -> None:
            if progress is not None and sent > done[0]:
                progress(sent - done[0])
            done[0] = sent

        try:
            self._client().put(str(local), remote, callback=callback, confirm=True)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if isinstance(exc, OSError) and self.transport.is_active():
                raise DeployError(f"{self.name}: cannot write {remote}: {exc}") from None
            raise self._lost(exc) from None

    def get(self, remote: str, local: Path) -> None:
        import paramiko

        try:
            self._client().get(remote, str(local))
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if isinstance(exc, OSError) and self.transport.is_active():
                raise DeployError(f"{self.name}: cannot read {remote}: {exc}") from None
            raise self._lost(exc) from None

    def close(self) -> None:
        if self._sftp is not None:
            with contextlib.suppress(Exception):
                self._sftp.close()
            self._sftp = None
        for t in [self.transport, *reversed(self.jumps)]:
            with contextlib.suppress(Exception):
                t.close()


class _SSHHeld(HeldCommand):
    def __init__(self, chan):
        self.chan = chan

    def readline(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        data = b""
        while b"\n" not in data and time.monotonic() < deadline:
            if self.chan.recv_ready():
                block = self.chan.recv(65536)
                if not block:
                    break
                data += block
            elif self.chan.eof_received or self.chan.closed:
                break
            else:
                select.select([self.chan], [], [], 0.2)
        return data.decode("utf-8", "replace").split("\n", 1)[0]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.chan.shutdown_write()
            self.chan.close()
