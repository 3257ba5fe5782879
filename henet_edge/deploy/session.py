"""Work in one device's state folder: the steps that deploy, remote and demo share.

The split follows Fabric's: a :class:`~henet_edge.deploy.connection.Connection` runs a
command or copies one file; a :class:`DeviceSession` adds what every caller needs on top,
written once: paths under the state folder, checked commands that name what failed,
atomic file writes, uploads with one progress bar, and scratch folders that are removed
afterwards whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .connection import CommandResult, Connection, Log

TMP = "tmp"

Agent = Callable[..., dict[str, Any]]  # runs one device-side agent operation: agent(op, *args)


class DeviceSession:
    """``connection`` plus the state folder ``base`` (set once the probe has resolved it)."""

    def __init__(self, connection: Connection, base: str = "", *, timeout: float = 1800,
                 progress: bool | None = None, progress_position: int | None = None):
        self.connection = connection
        self.base = base
        self.timeout = timeout
        self.progress = progress
        self.position = progress_position
        self.nonce = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"

    @property
    def name(self) -> str:
        """How messages name the device."""
        return self.connection.name

    def path(self, *parts: str) -> str:
        """A path under the state folder."""
        return "/".join([self.base, *parts])

    def unique(self, kind: str) -> str:
        """A file or folder name that no other session's will be, e.g. ``upload-1234-ab12cd34``."""
        return f"{kind}-{self.nonce}"

    def run(self, command: str, what: str, **kwargs) -> CommandResult:
        """Run ``command``; a failure raises an error that names ``what``."""
        kwargs.setdefault("timeout", self.timeout)
        return self.connection.check(command, what, **kwargs)

    def run_quietly(self, command: str) -> None:
        """Best effort (clean-up): failures, including a lost connection, are ignored."""
        with contextlib.suppress(Exception):
            self.connection.run(command, timeout=120)

    def write_file(self, path: str, data: bytes) -> None:
        """Replace ``path`` with ``data`` atomically (a temporary file, then ``mv``)."""
        tmp = f"{path}.tmp-{self.nonce}"
        self.run(f"cat > {shlex.quote(tmp)} && mv -f {shlex.quote(tmp)} {shlex.quote(path)}",
                 f"writing {path}", input=data)

    def upload(self, pairs: list[tuple[Path, str]], desc: str) -> None:
        """Copy ``(local, remote)`` files, creating their folders, with one progress bar."""
        from tqdm import tqdm

        dirs = sorted({remote.rsplit("/", 1)[0] for _, remote in pairs})
        self.run("mkdir -p " + " ".join(shlex.quote(d) for d in dirs), "creating upload folders")
        total = sum(local.stat().st_size for local, _ in pairs)
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                  desc=f"{self.name}: {desc}", leave=False, position=self.position,
                  disable=None if self.progress is None else not self.progress) as bar:
            for local, remote in pairs:
                self.connection.put(local, remote, progress=bar.update)

    @contextlib.contextmanager
    def scratch(self, kind: str) -> Iterator[str]:
        """A fresh folder under ``tmp/``, removed when the block ends (or fails)."""
        folder = self.path(TMP, self.unique(kind))
        try:
            self.run(f"mkdir -p {shlex.quote(folder)}", "creating a scratch folder")
            yield folder
        finally:
            self.run_quietly(f"rm -rf {shlex.quote(folder)}")


class SessionPart:
    """One part of the device's state (bundles, venvs) worked through a session and its agent."""

    def __init__(self, session: DeviceSession, agent: Agent, *, log: Log | None = None):
        self.session = session
        self.agent = agent
        self.log = log or (lambda _msg: None)

    @property
    def name(self) -> str:
        """How messages name the device."""
        return self.session.name
