"""What is the device, and can it take this deploy?

:func:`probe` asks the device (through any :class:`Connection`) for its
architecture, Python, OS, free disk and current install, using the
standard-library helper in :mod:`henet_edge.deploy.agent`.
:func:`check_device` turns the answer into one clear error (or warnings)
before anything is written to the device.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .connection import Connection
from .errors import DeviceCheckError, RemoteCommandError

# Machines ai-edge-litert publishes Linux wheels for (normalised name on the right).
SUPPORTED_MACHINES = {"aarch64": "aarch64", "arm64": "aarch64", "x86_64": "x86_64",
                      "amd64": "x86_64"}
MIN_PYTHON = (3, 10)
DEFAULT_REMOTE_DIR = "~/.henet-edge"
DEFAULT_REMOTE_PYTHON = "python3"
DEFAULT_RESERVE_MB = 50  # free space a deploy leaves on the device


def agent_source() -> bytes:
    """The one program deploy runs on the device: the agent, with the manifest module's
    source ahead of it as ``MANIFEST_SOURCE`` (the agent loads it when it needs it)."""
    package = Path(__file__).resolve().parents[1]
    manifest = (package / "device" / "manifest.py").read_text()
    agent = (package / "deploy" / "agent.py").read_bytes()
    return f"MANIFEST_SOURCE = {manifest!r}\n".encode() + agent


def run_agent(connection: Connection, python: str, op: str, *args: str,
              timeout: float | None = 600) -> dict[str, Any]:
    """Run one :mod:`~henet_edge.deploy.agent` operation on the device; its JSON answer."""
    command = " ".join([shlex.quote(python), "-", op, *(shlex.quote(a) for a in args)])
    result = connection.run(command, input=agent_source(), timeout=timeout)
    if not result.ok:
        raise RemoteCommandError(f"{connection.name}: device helper '{op}' failed: "
                                 f"{result.last_line()}")
    lines = [line for line in result.out.splitlines() if line.strip()]
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        raise RemoteCommandError(f"{connection.name}: device helper '{op}' gave no answer "
                                 f"({result.last_line()})") from None


REMOTE_DIR_CHARS = re.compile(r"[A-Za-z0-9._/~+@,=-]+")


def check_remote_dir(remote_dir: str) -> str:
    """Refuse a ``--remote-dir`` that the device's tools (pip, sh) would misread."""
    if not REMOTE_DIR_CHARS.fullmatch(remote_dir):
        bad = sorted({c for c in remote_dir if not REMOTE_DIR_CHARS.fullmatch(c)})
        shown = ", ".join(repr(c) for c in bad) or "nothing"
        raise DeviceCheckError(f"--remote-dir {remote_dir!r}: contains {shown}; use letters, "
                               f"digits and . _ - + ~ @ , = / only")
    return remote_dir


def resolve_remote_dir(remote_dir: str, home: str) -> str:
    """``~/...`` against the device's ``$HOME``; absolute paths as they are."""
    check_remote_dir(remote_dir)
    if remote_dir == "~" or remote_dir.startswith("~/"):
        if not home:
            raise DeviceCheckError("the device did not report $HOME; pass an absolute "
                                   "--remote-dir")
        return home.rstrip("/") + remote_dir[1:]
    if not remote_dir.startswith("/"):
        raise DeviceCheckError(f"--remote-dir {remote_dir!r}: use an absolute path or ~/...")
    return remote_dir.rstrip("/") or "/"


@dataclass
class DeviceInfo:
    """The probe's answer."""

    host: str
    machine: str
    system: str
    home: str
    base: str
    python: str                       # the interpreter asked for
    python_path: str | None = None    # where it was found (None: not found)
    python_version: tuple[int, ...] | None = None
    venv_ok: bool = False
    os: str = "unknown"
    board: str | None = None
    memory_bytes: int | None = None
    runtimes: dict[str, bool] = field(default_factory=dict)
    free_bytes: int | None = None
    free_at: str | None = None
    base_exists: bool = False
    installed: dict[str, Any] = field(default_factory=dict)
    python_error: str | None = None   # found, but could not run the probe
    python_bits: int | None = None    # 32 on a 32-bit userland, even on a 64-bit kernel

    @property
    def arch(self) -> str:
        return SUPPORTED_MACHINES.get(self.machine.lower(), self.machine)

    @property
    def python_text(self) -> str:
        return ".".join(map(str, self.python_version)) if self.python_version else "none"

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "arch": self.arch, "machine": self.machine,
                "system": self.system, "os": self.os, "board": self.board,
                "python": self.python_text, "python_path": self.python_path,
                "venv_module": self.venv_ok, "runtimes": self.runtimes,
                "memory_bytes": self.memory_bytes, "free_bytes": self.free_bytes,
                "base": self.base, "installed": self.installed}

    def summary(self) -> str:
        parts = [self.arch, f"Python {self.python_text}", self.os]
        if self.board:
            parts.append(self.board)
        if self.free_bytes is not None:
            parts.append(f"{human_bytes(self.free_bytes)} free")
        return ", ".join(parts)


def probe(connection: Connection, *, python: str = DEFAULT_REMOTE_PYTHON,
          remote_dir: str = DEFAULT_REMOTE_DIR) -> DeviceInfo:
    """Ask the device what it is. Writes nothing on the device."""
    shell = ('uname -m; uname -s; printf "%s\\n" "$HOME"; '
             f"command -v {shlex.quote(python)} || echo ''")
    result = connection.check(shell, "probing the device (uname)")
    lines = [*result.out.splitlines(), "", "", "", ""]
    machine, system, home, found = (line.strip() for line in lines[:4])
    base = resolve_remote_dir(remote_dir, home)
    info = DeviceInfo(host=connection.name, machine=machine or "unknown",
                      system=system or "unknown", home=home, base=base, python=python,
                      python_path=found or None)
    if not found:
        return info
    try:
        data = run_agent(connection, python, "probe", base)
    except RemoteCommandError as exc:
        # Found but not runnable as Python 3 (a Python 2, or a broken interpreter).
        info.python_error = str(exc)
        return info
    py = data.get("python", {})
    info.python_version = tuple(py.get("version") or ()) or None
    info.python_path = py.get("executable") or found
    info.venv_ok = bool(py.get("venv"))
    info.python_bits = py.get("bits")
    info.machine = data.get("machine") or info.machine
    info.os = data.get("os") or info.os
    info.board = data.get("board")
    info.memory_bytes = data.get("memory_bytes")
    info.runtimes = data.get("runtimes") or {}
    info.free_bytes = data.get("free_bytes")
    info.free_at = data.get("free_at")
    info.base_exists = bool(data.get("base_exists"))
    info.installed = data.get("installed") or {}
    return info


def human_bytes(n: float | None) -> str:
    if n is None:
        return "unknown"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


@dataclass
class SpaceNeeded:
    """What a deploy will write on the device, in bytes."""

    bundle: int = 0
    wheels: int = 0
    venv: int = 0
    reserve: int = 0

    @property
    def total(self) -> int:
        return self.bundle + self.wheels + self.venv + self.reserve

    def describe(self) -> str:
        parts = [f"bundle {human_bytes(self.bundle)}"]
        if self.wheels:
            parts.append(f"wheels {human_bytes(self.wheels)}")
        if self.venv:
            parts.append(f"venv ~{human_bytes(self.venv)}")
        if self.reserve:
            parts.append(f"reserve {human_bytes(self.reserve)}")
        return " + ".join(parts)


def check_device(info: DeviceInfo, *, space: SpaceNeeded | None = None,
                 needs_venv: bool = True) -> list[str]:
    """Raise :class:`DeviceCheckError` if this device cannot take the deploy.

    Returns warnings (things that work but deserve a line in the output).
    """
    host = info.host
    warnings: list[str] = []
    if info.system not in ("Linux", "unknown"):
        raise DeviceCheckError(f"{host}: unsupported system {info.system}; the device side "
                               f"runs on Linux (Raspberry Pi OS, Debian, Ubuntu)")
    if info.python_error:
        raise DeviceCheckError(f"{host}: {info.python_path} is not a usable Python 3: "
                               f"{info.python_error}")
    if info.python_path is None or info.python_version is None:
        raise DeviceCheckError(
            f"{host}: no Python 3 on the device ({info.python!r} not found or not runnable); "
            f"install it with `sudo apt install python3 python3-venv`, or point "
            f"--remote-python at one")
    if info.python_version[0] != 3 or tuple(info.python_version[:2]) < MIN_PYTHON:
        need = ".".join(map(str, MIN_PYTHON))
        raise DeviceCheckError(
            f"{host}: Python {info.python_text} at {info.python_path} is too old; henet-edge "
            f"needs {need} or newer (Raspberry Pi OS Bookworm ships 3.11)")
    if (info.machine.lower().startswith("arm") and info.arch != "aarch64") or \
            (info.arch == "aarch64" and info.python_bits == 32):
        raise DeviceCheckError(
            f"{host}: this is a 32-bit ARM system ({info.machine}, {info.python_bits or 32}-bit "
            f"Python): no LiteRT (ai-edge-litert) wheels exist for it; install Raspberry Pi OS "
            f"(64-bit) (Pi 3, 4, 5 or Zero 2 W) and deploy again")
    if info.arch not in SUPPORTED_MACHINES.values():
        preinstalled = [name for name, ok in info.runtimes.items() if ok]
        if not preinstalled:
            raise DeviceCheckError(
                f"{host}: unsupported architecture {info.machine}: there are no ai-edge-litert "
                f"wheels for it (supported: aarch64, x86_64) and no TFLite runtime is "
                f"installed; use a 64-bit OS (Raspberry Pi OS 64-bit on a Pi 3, 4 or 5)")
        warnings.append(f"{info.machine} has no ai-edge-litert wheels; relying on the "
                        f"device's own {preinstalled[0]}")
    if needs_venv and not info.venv_ok:
        raise DeviceCheckError(
            f"{host}: Python {info.python_text} on the device cannot create virtual "
            f"environments (venv/ensurepip missing); run `sudo apt install python3-venv` there")
    if space is not None:
        if info.free_bytes is None:
            warnings.append(f"could not read the free disk space at {info.base}")
        elif info.free_bytes < space.total:
            raise DeviceCheckError(
                f"{host}: not enough free disk: {human_bytes(info.free_bytes)} free at "
                f"{info.free_at or info.base}, this deploy needs {human_bytes(space.total)} "
                f"({space.describe()}); free some space and re-run")
    return warnings
