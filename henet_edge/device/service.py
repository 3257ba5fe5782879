"""``henet-edge service install|status|uninstall``: run ``serve`` on boot with systemd.

A system unit (``/etc/systemd/system``) when run as root, a user unit
(``~/.config/systemd/user``) otherwise; a user unit starts at boot without a
login only with lingering enabled, which :func:`install` says when it is off.
The unit runs the state folder's ``venv`` (so a redeploy's new venv is used)
on the ``current`` bundle, with ``Restart=on-failure``; a system unit runs as the
owner of the state folder, not as root. A token is kept in the state folder's
``service-token`` (mode 0600, read by ``serve --token-file``), never in the unit:
systemd shows a unit's ``Environment=`` to every local user. Where systemd is not
running (a container, a chroot), the unit is written into the state folder and
the result says it cannot be started there.
"""

from __future__ import annotations

import getpass
import os
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from henet_edge import HenetEdgeError
from henet_edge.storage import write_text_atomic

from .classify import edge_home

UNIT = "henet-edge.service"
TOKEN_FILE = "service-token"  # in the state folder, beside the unit's other inputs
SYSTEM_DIR = Path("/etc/systemd/system")
USER_DIR = Path("~/.config/systemd/user")
SYSTEMD_RUNNING = Path("/run/systemd/system")  # sd_booted(): the boot's init is systemd


class ServiceError(HenetEdgeError, RuntimeError):
    """The service cannot be installed, inspected or removed."""


@dataclass
class ServiceState:
    """Where the unit is, whether systemd runs here, and what it says about the unit."""

    unit: str
    scope: str                      # "system", "user" or "none" (no systemd here)
    installed: bool
    systemd: bool
    enabled: str | None = None      # systemctl is-enabled
    active: str | None = None       # systemctl is-active
    notes: list[str] = field(default_factory=list)
    removed: bool = False           # uninstall found the unit and removed it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        if self.removed:
            return f"removed {self.unit}" + (" (stopped and disabled)" if self.systemd else "")
        if not self.installed:
            return f"not installed ({self.unit} absent)"
        if not self.systemd:
            return f"unit written to {self.unit}; systemd is not running here, so not started"
        return f"{self.scope} unit {self.unit}: {self.active}, {self.enabled}"


def systemd_running() -> bool:
    return SYSTEMD_RUNNING.is_dir() and shutil.which("systemctl") is not None


def _as_root() -> bool:
    return os.geteuid() == 0


def unit_path(home: Path | None = None) -> tuple[Path, str]:
    """The unit file and its scope (system, user, or none: in the state folder)."""
    if not systemd_running():
        return (home or edge_home()) / UNIT, "none"
    if _as_root():
        return SYSTEM_DIR / UNIT, "system"
    return USER_DIR.expanduser() / UNIT, "user"


_PLAIN_WORD = re.compile(r"[\w@+=:,./-]+", re.ASCII)  # read by systemd as written


def unit_word(value: str, *, command: bool = False, name: str | None = None) -> str:
    """``value`` as one word of a unit file line, read back by systemd exactly.

    systemd is not a shell: inside double quotes it reads C-style backslash escapes,
    it expands ``%`` specifiers whatever the quoting, and in a command line ``$VAR``
    too (``command=True``). So: ``\\`` and ``\"`` escaped, ``%%``, and ``$$`` in
    commands. A control character (a newline would end the line) is refused, naming
    the value as ``name`` (a secret's option) or else by itself.
    """
    _refuse_control_characters(value, name)
    if _PLAIN_WORD.fullmatch(value):
        return value
    word = value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return '"' + (word.replace("$", "$$") if command else word) + '"'


def _refuse_control_characters(value: str, name: str | None) -> None:
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ServiceError(f"{name or repr(value)} holds a control character, which a "
                           "systemd unit cannot carry; choose another")


def unit_text(python: str, home: Path, serve_args: list[str], *, scope: str,
              user: str | None = None) -> str:
    """The systemd unit that runs ``henet-edge serve SERVE_ARGS`` with ``python`` (as
    ``user``, for a system unit)."""
    command = " ".join(unit_word(a, command=True)
                       for a in [python, "-m", "henet_edge.cli", "serve", *serve_args])
    target = "default.target" if scope == "user" else "multi-user.target"
    return "\n".join([
        "[Unit]",
        "Description=henet-edge serve: the image classifier's HTTP service",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        *([f"User={unit_word(user)}"] if user else []),
        f"Environment={unit_word('HENET_EDGE_HOME=' + str(home))}",
        "Environment=PYTHONUNBUFFERED=1",
        "NoNewPrivileges=yes",
        f"ExecStart={command}",
        "Restart=on-failure",
        "RestartSec=5",
        "KillSignal=SIGTERM",
        "TimeoutStopSec=10",
        "",
        "[Install]",
        f"WantedBy={target}",
        "",
    ])


def _service_user(home: Path) -> str | None:
    """Who a system unit runs as: the state folder's owner (None: root owns it)."""
    import pwd

    uid = home.stat().st_uid
    return None if uid == 0 else pwd.getpwuid(uid).pw_name


def _keep_token(home: Path, token: str | None, user: str | None) -> list[str]:
    """Write (or, with no token, remove) the token file; the ``serve`` arguments for it."""
    path = home / TOKEN_FILE
    if not token:
        path.unlink(missing_ok=True)
        return []
    _refuse_control_characters(token, "--token")
    write_text_atomic(path, token + "\n", mode=0o600)
    if user is not None:  # a system unit's user must read it; nobody else may
        import pwd

        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return ["--token-file", str(path)]


def _device_python(home: Path) -> str:
    """The state folder's venv python when there is one (a redeploy switches it)."""
    venv = home / "venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def _systemctl(scope: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    argv = ["systemctl", *(["--user"] if scope == "user" else []), *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if check and done.returncode != 0:
        reason = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["failed"]
        raise ServiceError(f"`{' '.join(argv)}` failed: {reason[0]}")
    return done


def _linger_note() -> str | None:
    user = getpass.getuser()
    try:
        done = subprocess.run(["loginctl", "show-user", user, "--property=Linger"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.stdout.strip() == "Linger=yes":
        return None
    return (f"a user unit starts at boot only with lingering: run "
            f"`sudo loginctl enable-linger {user}` once")


def status(home: Path | None = None) -> ServiceState:
    """The unit's location and, where systemd runs, whether it is enabled and active."""
    path, scope = unit_path(home)
    state = ServiceState(str(path), scope, path.is_file(), scope != "none")
    if state.installed and state.systemd:
        state.enabled = _systemctl(scope, "is-enabled", UNIT, check=False).stdout.strip()
        state.active = _systemctl(scope, "is-active", UNIT, check=False).stdout.strip()
    return state


def install(serve_args: list[str], home: Path | None = None,
            token: str | None = None) -> ServiceState:
    """Write the unit (atomically) and the token file (mode 0600 from creation); where
    systemd runs, enable the unit and (re)start it."""
    home = (home or edge_home()).expanduser().absolute()
    path, scope = unit_path(home)
    try:
        home.mkdir(parents=True, exist_ok=True)
        user = _service_user(home) if scope == "system" else None
        serve_args = [*serve_args, *_keep_token(home, token, user)]
        text = unit_text(_device_python(home), home, serve_args,
                         scope="user" if scope == "user" else "system", user=user)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, text, mode=0o600)
    except OSError as exc:
        raise ServiceError(f"cannot write {exc.filename or path}: "
                           f"{exc.strerror or exc}") from None
    notes = []
    if scope == "none":
        notes.append(f"systemd is not running on this machine, so the service cannot be "
                     f"started here; the unit is written to {path} (copy it into "
                     f"{SYSTEM_DIR} on a systemd machine, or run `henet-edge serve`)")
        return ServiceState(str(path), scope, True, False, notes=notes)
    _systemctl(scope, "daemon-reload")
    _systemctl(scope, "enable", UNIT)
    _systemctl(scope, "restart", UNIT)
    if scope == "user" and (note := _linger_note()):
        notes.append(note)
    state = status(home)
    state.notes = notes
    return state


def restart(home: Path | None = None) -> ServiceState:
    """Restart an installed unit (after a redeploy); nothing when none is installed."""
    state = status(home)
    if state.installed and state.systemd:
        _systemctl(state.scope, "restart", UNIT)
        return status(home)
    return state


def uninstall(home: Path | None = None) -> ServiceState:
    """Stop, disable and remove the unit."""
    path, scope = unit_path(home)
    existed = path.is_file()
    if scope != "none" and existed:
        _systemctl(scope, "disable", "--now", UNIT, check=False)
    try:
        path.unlink(missing_ok=True)
        ((home or edge_home()).expanduser() / TOKEN_FILE).unlink(missing_ok=True)
    except OSError as exc:
        raise ServiceError(f"cannot remove {path}: {exc.strerror or exc}") from None
    if scope != "none":
        _systemctl(scope, "daemon-reload", check=False)
    state = status(home)
    state.removed = existed and not state.installed
    return state
