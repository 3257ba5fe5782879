"""The device's deploy lock: one deploy or rollback per state folder at a time.

The device-side agent ``flock()``s ``.deploy.lock`` and holds it for as long as
the command that took it runs, so the lock dies with the connection holding it:
a killed deploy never leaves the device locked.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
from shlex import quote
from typing import Any

from henet_edge.storage import utc_timestamp

from .connection import Connection, HeldCommand
from .errors import DeployError, RemoteCommandError
from .probe import DEFAULT_REMOTE_DIR, agent_source


def deployer() -> str:
    """Who is deploying, as the lock and the history name them: ``user@host``."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


class DeployLock:
    """Take and release the lock on ``base`` through ``connection``."""

    def __init__(self, connection: Connection, remote_python: str, *, name: str):
        self.connection = connection
        self.remote_python = remote_python
        self.name = name                   # how messages name the device
        self._held: HeldCommand | None = None

    def take(self, base: str, timeout: float) -> dict[str, Any]:
        """Wait up to ``timeout`` s for the lock; the installed state as read under it."""
        holder = json.dumps({"by": deployer(), "pid": os.getpid(), "since": utc_timestamp()})
        command = " ".join([quote(self.remote_python), "-c", quote(agent_source().decode()),
                            "lock", quote(base), f"{timeout:g}", quote(holder)])
        held = self.connection.start(command)
        line = held.readline(timeout + 60)
        try:
            answer = json.loads(line)
        except ValueError:
            held.close()
            raise RemoteCommandError(f"{self.name}: could not take the deploy lock in "
                                     f"{base} ({line.strip() or 'no answer'})") from None
        if not answer.get("ok"):
            held.close()
            raise DeployError(self._refusal(base, answer, timeout))
        self._held = held
        return answer.get("installed") or {}

    def release(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.close()

    def _refusal(self, base: str, answer: dict[str, Any], timeout: float) -> str:
        where = f"{self.name}: --remote-dir {base}"
        if answer.get("error") == "foreign":
            shown = ", ".join(answer.get("entries") or [])
            more = answer.get("count", 0) - len(answer.get("entries") or [])
            return (f"{where} is not empty and was not made by henet-edge (it holds {shown}"
                    + (f" and {more} more" if more > 0 else "") + "); deploy only ever "
                    f"deletes what it created, so give a new or empty folder "
                    f"(default {DEFAULT_REMOTE_DIR})")
        if answer.get("error") == "os":
            return (f"{self.name}: cannot take the deploy lock in {base}: "
                    f"{answer.get('message', '?')}")
        if answer.get("error") == "not_a_folder":
            return f"{where} exists and is not a folder; give another --remote-dir"
        holder = answer.get("holder") or {}
        return (f"{self.name}: another deploy or rollback to {base} is in progress "
                f"(by {holder.get('by', '?')}, pid {holder.get('pid', '?')}, since "
                f"{holder.get('since', '?')}); waited {timeout:g}s, try again when it ends")
