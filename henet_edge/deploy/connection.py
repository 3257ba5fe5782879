"""How the installer reaches a device: run a shell command, copy a file in or out.

The installer only ever talks to a :class:`Connection`, so the same code
deploys over SSH (:class:`henet_edge.deploy.ssh.SSHConnection`) and into a
folder on this machine laid out exactly like a device
(:class:`LocalConnection`, used by the demo). Commands are POSIX ``sh``
scripts; paths are absolute and quoted by the caller.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import RemoteCommandError

Sink = Callable[[bytes], None]
Log = Callable[[str], None]  # takes one line of progress or output for the user
Progress = Callable[[int], None]

COPY_CHUNK = 1 << 20


@dataclass
class CommandResult:
    command: str
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def err(self) -> str:
        return self.stderr.decode("utf-8", "replace")

    def last_line(self) -> str:
        """The last non-empty line of stderr (else stdout): the usual error message."""
        for text in (self.err, self.out):
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            if lines:
                return lines[-1]
        return f"exit status {self.returncode}"


class HeldCommand(ABC):
    """A command left running on the device (its stdin open) until :meth:`close`."""

    @abstractmethod
    def readline(self, timeout: float) -> str:
        """The command's first line of output ("" if it ended or ``timeout`` passed)."""

    @abstractmethod
    def close(self) -> None:
        """Close the command's stdin and let it end."""


class Connection(ABC):
    """A device reachable for commands and file copies."""

    #: How messages name the device, e.g. ``pi@pi.local:22`` or ``local``.
    name: str = "device"

    @abstractmethod
    def run(self, command: str, *, input: bytes | None = None, timeout: float | None = None,
            stdout_sink: Sink | None = None, stderr_sink: Sink | None = None) -> CommandResult:
        """Run ``command`` with ``/bin/sh -c`` on the device and wait for it.

        ``stdout_sink``/``stderr_sink`` receive output chunks as they arrive
        (for streaming progress); the full output is returned as well.
        """

    @abstractmethod
    def put(self, local: Path, remote: str, *, progress: Progress | None = None) -> None:
        """Copy the local file ``local`` to the device path ``remote``."""

    @abstractmethod
    def get(self, remote: str, local: Path) -> None:
        """Copy the device file ``remote`` to ``local``."""

    @abstractmethod
    def start(self, command: str) -> HeldCommand:
        """Start ``command`` and leave it running; it sees EOF on stdin when closed
        or when this connection dies (what device-side locks rely on)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the connection (if any)."""

    def check(self, command: str, what: str, **kwargs) -> CommandResult:
        """:meth:`run`, raising :class:`RemoteCommandError` naming ``what`` on failure."""
        result = self.run(command, **kwargs)
        if not result.ok:
            raise RemoteCommandError(f"{self.name}: {what} failed: {result.last_line()}")
        return result

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LocalConnection(Connection):
    """This machine as the device: commands run here, "uploads" are file copies."""

    def __init__(self, name: str = "local", env: dict[str, str] | None = None):
        self.name = name
        self.env = env

    def run(self, command: str, *, input: bytes | None = None, timeout: float | None = None,
            stdout_sink: Sink | None = None, stderr_sink: Sink | None = None) -> CommandResult:
        env = None if self.env is None else {**os.environ, **self.env}
        proc = subprocess.Popen(["/bin/sh", "-c", command], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        chunks: dict[str, list[bytes]] = {"out": [], "err": []}

        def pump(stream, key: str, sink: Sink | None) -> None:
            for block in iter(lambda: stream.read1(65536), b""):
                chunks[key].append(block)
                if sink is not None:
                    sink(block)

        threads = [threading.Thread(target=pump, args=(proc.stdout, "out", stdout_sink),
                                    daemon=True),
                   threading.Thread(target=pump, args=(proc.stderr, "err", stderr_sink),
                                    daemon=True)]
        for thread in threads:
            thread.start()
        try:
            if input:
                proc.stdin.write(input)
            proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise RemoteCommandError(f"{self.name}: command timed out after {timeout:g}s") \
                from None
        for thread in threads:
            thread.join()
        return CommandResult(command, returncode, b"".join(chunks["out"]),
                             b"".join(chunks["err"]))

    def start(self, command: str) -> HeldCommand:
        env = None if self.env is None else {**os.environ, **self.env}
        proc = subprocess.Popen(["/bin/sh", "-c", command], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        return _LocalHeld(proc)

    def put(self, local: Path, remote: str, *, progress: Progress | None = None) -> None:
        with open(local, "rb") as src, open(remote, "wb") as dst:
            while block := src.read(COPY_CHUNK):
                dst.write(block)
                if progress is not None:
                    progress(len(block))

    def get(self, remote: str, local: Path) -> None:
        shutil.copyfile(remote, local)


class _LocalHeld(HeldCommand):
    def __init__(self, proc: subprocess.Popen):
        self.proc = proc

    def readline(self, timeout: float) -> str:
        line: list[bytes] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()),
                                  daemon=True)
        reader.start()
        reader.join(timeout)
        return line[0].decode("utf-8", "replace") if line else ""

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
