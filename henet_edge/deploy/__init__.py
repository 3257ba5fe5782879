"""``henet-edge deploy``: install the device side and a bundle on a device, safely.

Desktop side only (paramiko is imported when a connection is made, never at
package import). Modules:

* :mod:`.hosts` - ``--host`` values and ``~/.ssh/config`` (aliases, ProxyJump).
* :mod:`.hostkeys` - known_hosts checks, OpenSSH SHA256 fingerprints, accept-new.
* :mod:`.connection` - the :class:`Connection` interface and :class:`LocalConnection`.
* :mod:`.ssh` - :func:`connect` and the paramiko :class:`SSHConnection`.
* :mod:`.session` - :class:`DeviceSession`: a connection plus the state folder, and the
  steps every caller shares (checked commands, atomic writes, uploads, scratch folders).
* :mod:`.agent` - the stdlib-only helper run by the device's own ``python3``.
* :mod:`.probe` - what the device is, and whether it can take the deploy.
* :mod:`.wheel` - the cached, reproducible wheel of this project.
* :mod:`.installer` - layout, venv install, upload, verify, atomic switch,
  self-test, prune, rollback, status.
* :mod:`.remote` - ``remote classify`` and ``remote bench``.
* :mod:`.fleet` - several hosts in parallel.

The same installer deploys into a local folder laid out exactly like a
device (the demo)::

    from henet_edge.deploy import deploy_local
    result = deploy_local("bundles/henet_r3", "/tmp/pi", device_python=sys.executable)
"""

from __future__ import annotations

from pathlib import Path

from .errors import (
    ConnectError,
    DeployError,
    DeviceCheckError,
    HostKeyError,
    RemoteCommandError,
    SelftestFailed,
)

__all__ = ["ConnectError", "DeployError", "DeviceCheckError", "HostKeyError",
           "RemoteCommandError", "SelftestFailed", "deploy_local"]


def deploy_local(bundle: str | Path, folder: str | Path, *, device_python: str | None = None,
                 wheel: str | Path | None = None, wheelhouse: str | Path | None = None,
                 keep: int = 3, log=None, progress: bool | None = None):
    """Deploy ``bundle`` into ``folder`` on this machine through the real installer.

    With ``device_python`` (e.g. ``sys.executable`` of an environment that has
    ``henet-edge[device]``), no venv is created, so the demo is quick; without
    it a venv is made under ``folder`` exactly as on a Pi (``python3`` from
    PATH, dependencies from ``wheelhouse`` or the package index).
    Returns a :class:`~henet_edge.deploy.installer.DeployResult`.
    """
    from .connection import LocalConnection
    from .installer import Installer, InstallOptions

    folder = Path(folder).expanduser().resolve()
    options = InstallOptions(remote_dir=str(folder), keep=keep,
                             device_python=device_python,
                             remote_python=device_python or "python3",
                             wheel=Path(wheel) if wheel else None,
                             wheelhouse=Path(wheelhouse) if wheelhouse else None)
    with LocalConnection(name=f"local:{folder}") as connection:
        return Installer(connection, options, log=log, progress=progress).deploy(bundle)
