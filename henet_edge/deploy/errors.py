"""Errors of the deploy commands; each is a user error the CLI prints on one line."""

from __future__ import annotations

from typing import Any

from henet_edge import HenetEdgeError


class DeployError(HenetEdgeError):
    """Deploying to (or talking to) a device failed in a way the user can act on."""


class ConnectError(DeployError):
    """The device could not be reached or would not let us in."""


class HostKeyError(ConnectError):
    """The device's host key is unknown or has changed."""


class DeviceCheckError(DeployError):
    """The device cannot take this deploy (no Python, wrong architecture, full disk...)."""


class RemoteCommandError(DeployError):
    """A command on the device exited non-zero."""


class SelftestFailed(DeployError):
    """The bundle's golden images did not reproduce on the device."""

    def __init__(self, message: str, result: dict[str, Any] | None = None):
        super().__init__(message)
        self.result = result or {}
