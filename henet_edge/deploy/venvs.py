"""The device side's virtual environments: ``venvs/<key>`` in the state folder.

One venv per wheel hash and interpreter (:func:`venv_key`), made with
``--system-site-packages`` so apt's picamera2 stays visible. A venv counts only
once ``henet-edge-install.json`` is written inside it, last: an install cut
short leaves a folder without it, which the next deploy removes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from shlex import quote
from typing import Any

from henet_edge import __version__
from henet_edge.device.bundle import sha256_file
from henet_edge.storage import utc_timestamp

from . import agent
from .connection import Log
from .errors import DeployError, RemoteCommandError
from .probe import DeviceInfo
from .session import TMP, Agent, DeviceSession, SessionPart

VENVS, VENV_LINK, INSTALL_RECORD = "venvs", "venv", agent.INSTALL_RECORD
INSTALL_STAGE = "install"  # tmp/install-*: the wheels being uploaded for a venv


def venv_key(wheel_sha256: str, python_path: str) -> str:
    """The venv's folder name: the wheel and the interpreter it was made for."""
    return hashlib.sha256(f"{wheel_sha256}\0{python_path}".encode()).hexdigest()[:16]


class DeviceVenvs(SessionPart):
    """Find, check and install the venvs under ``session.base``."""

    def __init__(self, session: DeviceSession, agent: Agent, *, timeout: float,
                 log: Log | None = None):
        super().__init__(session, agent, log=log)
        self.timeout = timeout      # pip on a Pi Zero 2 can be slow

    def is_complete(self, key: str, installed: dict[str, Any]) -> bool:
        """Whether ``venvs/<key>`` holds its install record (``installed``: the agent's state)."""
        if installed.get("venv") == key and installed.get("venv_record"):
            return True
        return self.session.connection.run(
            f"test -f {quote(self.session.path(VENVS, key, INSTALL_RECORD))}").ok

    def record(self, key: str, installed: dict[str, Any]) -> dict[str, Any] | None:
        """The install record of ``venvs/<key>``, or None."""
        if installed.get("venv") == key:
            return installed.get("venv_record")
        result = self.session.connection.run(
            f"cat {quote(self.session.path(VENVS, key, INSTALL_RECORD))}")
        try:
            return json.loads(result.out) if result.ok else None
        except json.JSONDecodeError:
            return None

    def install(self, key: str, wheel: Path, wheel_sha: str, wheelhouse: list[Path],
                info: DeviceInfo) -> dict[str, Any]:
        """Make ``venvs/<key>`` with the wheel installed and recorded; its TFLite runtime."""
        session = self.session
        stage = session.path(TMP, session.unique(INSTALL_STAGE))
        venv = session.path(VENVS, key)
        pairs = [(wheel, f"{stage}/{wheel.name}")]
        pairs += [(p, f"{stage}/wheelhouse/{p.name}") for p in wheelhouse]
        source = "the uploaded wheelhouse" if wheelhouse else "the device's package index"
        self.log(f"installing henet-edge {__version__} [device] into {venv} "
                 f"(dependencies from {source})")
        try:
            session.upload(pairs, "wheels")
            self._verify_uploads(pairs)
            session.run(f"rm -rf {quote(venv)} && {quote(info.python_path)} -m venv "
                        f"--system-site-packages {quote(venv)}", "creating the venv")
            self._pip_install(venv, pairs[0][1], f"{stage}/wheelhouse" if wheelhouse else None)
            runtime = self._runtime(venv)
            record = {"version": __version__, "wheel": wheel.name, "wheel_sha256": wheel_sha,
                      "python": info.python_path, "python_version": info.python_text,
                      "dependencies": "wheelhouse" if wheelhouse else "index",
                      "runtime": runtime,
                      "installed": utc_timestamp()}
            session.write_file(f"{venv}/{INSTALL_RECORD}", json.dumps(record, indent=1).encode())
        except BaseException:
            session.run_quietly(f"rm -rf {quote(venv)} {quote(stage)}")
            raise
        session.run_quietly(f"rm -rf {quote(stage)}")
        self.log(f"installed; runtime {runtime.get('name')} {runtime.get('version')}")
        return runtime

    def _verify_uploads(self, pairs: list[tuple[Path, str]]) -> None:
        remote_hashes = self.agent("sha256", *[remote for _, remote in pairs])
        bad = [remote.rsplit("/", 1)[-1] for local, remote in pairs
               if remote_hashes.get(remote) != sha256_file(local)]
        if bad:
            raise DeployError(f"{self.name}: {', '.join(bad)} failed the sha256 check after "
                              f"upload (corrupted in transfer); nothing was changed, re-run")

    def _pip_install(self, venv: str, wheel: str, wheelhouse: str | None) -> None:
        """pip-install ``wheel[device]`` into ``venv`` (offline: from ``wheelhouse``)."""
        pip = [f"{venv}/bin/python", "-m", "pip", "install", "--disable-pip-version-check",
               "--no-input"]
        if wheelhouse:
            pip += ["--no-index", "--find-links", wheelhouse]
        pip_line = " ".join(quote(a) for a in pip)
        result = self.session.connection.run(f"{pip_line} {quote(wheel + '[device]')}",
                                             timeout=self.timeout)
        if not result.ok:
            raise RemoteCommandError(f"{self.name}: pip install failed: {result.last_line()}")

    def _runtime(self, venv: str) -> dict[str, Any]:
        """The TFLite runtime the device side in ``venv`` finds (it must find one)."""
        check = ("import json; from henet_edge.device.runtime import find_runtime; "
                 "print(json.dumps(find_runtime().describe()))")
        result = self.session.connection.run(f"{quote(venv + '/bin/python')} -c {quote(check)}")
        if not result.ok:
            raise RemoteCommandError(f"{self.name}: the installed device side cannot "
                                     f"load a TFLite runtime: {result.last_line()}")
        return json.loads(result.out.strip().splitlines()[-1])
