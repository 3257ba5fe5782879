"""Several hosts at once: bounded parallelism, one failure never stops the others.

:func:`on_fleet` connects to every host of a :class:`FleetOptions` (verified
host keys; two names for one device are worked on once) and calls
``work(installer)`` for each. Underneath, :func:`run_fleet` runs
``work(host, index)`` on a thread pool of ``jobs`` workers and returns one
:class:`HostOutcome` per host, in the order given. A user error
(:class:`~henet_edge.HenetEdgeError`) becomes that host's one-line error;
anything unexpected is reported the same way with its type, so a crash on one
device still lets the rest finish.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from henet_edge import HenetEdgeError, UsageError

from .connection import Log
from .errors import DeployError
from .probe import DEFAULT_REMOTE_DIR, DEFAULT_REMOTE_PYTHON
from .ssh import ConnectOptions, SSHConnection, check_resolvable

if TYPE_CHECKING:
    from .installer import Installer, InstallOptions

DEFAULT_JOBS = 4  # hosts worked on in parallel



@dataclass
class FleetOptions:
    """Which devices, how to reach them, and where the device side lives there."""

    hosts: list[str] = field(default_factory=list)
    hosts_file: Path | None = None
    connect: ConnectOptions = field(default_factory=ConnectOptions)
    remote_dir: str = DEFAULT_REMOTE_DIR
    remote_python: str = DEFAULT_REMOTE_PYTHON
    jobs: int = DEFAULT_JOBS

    @property
    def several(self) -> bool:
        """More than one device may answer (the output then names each host)."""
        return len(self.hosts) > 1 or self.hosts_file is not None

    def resolve(self) -> list[str]:
        """The hosts, ``--hosts-file``'s included and duplicates dropped; checked."""
        from .hosts import parse_host_spec, read_hosts_file
        from .probe import check_remote_dir

        check_remote_dir(self.remote_dir)
        hosts = list(self.hosts)
        if self.hosts_file is not None:
            hosts += read_hosts_file(self.hosts_file)
        if not hosts:
            raise UsageError("give the device with --host HOST (or --hosts-file FILE)")
        if self.jobs < 1:
            raise UsageError("--jobs must be at least 1")
        if not (math.isfinite(self.connect.connect_timeout) and self.connect.connect_timeout > 0):
            raise UsageError(f"--connect-timeout must be above 0 seconds, got "
                             f"{self.connect.connect_timeout:g}")
        for host in hosts:  # an empty or malformed --host fails before any slow work
            parse_host_spec(host)
        return list(dict.fromkeys(hosts))  # the same device twice would race with itself

    def resolve_before_slow_work(self) -> list[str]:
        """:meth:`resolve`, and with one device its name resolved too: a typo then fails
        before a conversion or a wheel build (of several, each failure is in the table)."""
        hosts = self.resolve()
        if len(hosts) == 1:
            check_resolvable(hosts[0], self.connect)
        return hosts


@dataclass
class HostOutcome:
    host: str
    ok: bool
    result: dict[str, Any] | None = None
    error: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "ok": self.ok, "result": self.result, "error": self.error,
                "seconds": round(self.seconds, 2)}


def _one(work: Callable[[str, int], dict[str, Any]], host: str, index: int) -> HostOutcome:
    t0 = time.monotonic()
    try:
        result = work(host, index)
    except HenetEdgeError as exc:
        return HostOutcome(host, False, error=str(exc), seconds=time.monotonic() - t0)
    except Exception as exc:
        return HostOutcome(host, False, error=f"{type(exc).__name__}: {exc}",
                           seconds=time.monotonic() - t0)
    return HostOutcome(host, True, result=result, seconds=time.monotonic() - t0)


def _lost(host: str) -> HostOutcome:
    """A host whose worker ended without an outcome (a SystemExit in a library)."""
    return HostOutcome(host, False, error="its worker stopped without an outcome")


def run_fleet(hosts: Sequence[str], work: Callable[[str, int], dict[str, Any]], *,
              jobs: int = DEFAULT_JOBS) -> list[HostOutcome]:
    """Run ``work`` for every host, at most ``jobs`` at a time.

    Workers are daemon threads, so Ctrl-C stops the command at once (each
    device is left consistent by the installer's design) instead of waiting
    for every host to finish.
    """
    if len(hosts) == 1:
        return [_one(work, hosts[0], 0)]
    slots = threading.BoundedSemaphore(max(1, jobs))
    outcomes: list[HostOutcome | None] = [None] * len(hosts)

    def runner(index: int, host: str) -> None:
        with slots:
            outcomes[index] = _one(work, host, index)

    threads = [threading.Thread(target=runner, args=(i, h), daemon=True,
                                name=f"henet-edge-{h}") for i, h in enumerate(hosts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(0.2)
    return [o if o is not None else _lost(h) for o, h in zip(outcomes, hosts, strict=True)]


def on_fleet(fleet: FleetOptions, work: Callable[[Installer], dict[str, Any]], *,
             install_options: InstallOptions | None = None,
             log: Callable[[str, str], None] = lambda _host, _msg: None,
             progress: bool | None = None,
             hosts: Sequence[str] | None = None) -> list[HostOutcome]:
    """Run ``work(installer)`` on every device of ``fleet``; one outcome per host, in order.

    ``log(host, message)`` gets each host's progress lines. A host reaching a
    device already worked on (the same host key and boot) gets ``{"same_device_as": FIRST}``.
    ``hosts`` is ``fleet.resolve()`` when the caller has already resolved it.
    """
    from .installer import Installer, InstallOptions
    from .ssh import connect

    hosts = fleet.resolve() if hosts is None else list(hosts)
    options = install_options or InstallOptions()
    options.remote_dir, options.remote_python = fleet.remote_dir, fleet.remote_python
    several = len(hosts) > 1
    same_device = SameDevice()

    def one(host: str, index: int) -> dict[str, Any]:
        def host_log(message: str) -> None:
            log(host, message)

        with connect(host, fleet.connect, log=host_log) as connection:
            first = same_device.claim(host, device_identity(connection))
            if first is not None:
                host_log(f"same device as {first} (the same host key and boot): done once, "
                         f"as {first}")
                return {"host": host, "same_device_as": first}
            installer = Installer(connection, options, log=host_log, progress=progress,
                                  progress_position=index if several else None)
            return work(installer)

    return run_fleet(hosts, one, jobs=fleet.jobs)


def failed(outcomes: Sequence[HostOutcome]) -> list[HostOutcome]:
    return [o for o in outcomes if not o.ok]


def failure_lines(outcomes: Sequence[HostOutcome]) -> list[str]:
    """The one way a failed host is shown: ``HOST: FAILED: error``, one line each.

    An error that already starts with its host's name is not prefixed twice.
    """
    lines = []
    for o in failed(outcomes):
        error = o.error or "failed"
        if error.startswith(f"{o.host}: "):
            error = error[len(o.host) + 2:]
        lines.append(f"{o.host}: FAILED: {error}")
    return lines


def fleet_error(outcomes: Sequence[HostOutcome]) -> HenetEdgeError | None:
    """The command's closing error: one host's own error, or how many of several failed."""
    bad = failed(outcomes)
    if not bad:
        return None
    if len(outcomes) == 1:
        return DeployError(bad[0].error or "failed")
    return DeployError(f"{len(bad)} of {len(outcomes)} hosts failed")


def raise_for_failures(outcomes: Sequence[HostOutcome], echo: Log) -> None:
    """Raise the closing error if a host failed; with several hosts, ``echo`` each failure first."""
    error = fleet_error(outcomes)
    if error is None:
        return
    if len(outcomes) > 1:
        for line in failure_lines(outcomes):
            echo(line)
    raise error


def fleet_json(outcomes: Sequence[HostOutcome], *, healthy: bool = True) -> dict[str, Any]:
    """The outcomes for ``--json``; ``ok`` agrees with the exit code (``healthy`` False:
    a host answered, but with a problem the command fails on, as ``status --verify``)."""
    return {"ok": not failed(outcomes) and healthy, "hosts": [o.to_dict() for o in outcomes]}


def outcome_table(outcomes: Sequence[HostOutcome], headers: Sequence[str],
                  row: Callable[[dict[str, Any]], list[Any]]) -> str:
    """One row per host: ``row(result)`` plus the time; a failed host says so (details below)."""
    blank = [""] * (len(headers) - 2)
    rows = []
    for o in outcomes:
        if not o.ok:
            rows.append([o.host, "FAILED (below)", *blank])
        elif "same_device_as" in (o.result or {}):
            rows.append([o.host, f"same device as {o.result['same_device_as']}", *blank])
        else:
            rows.append([*row(o.result or {}), f"{o.seconds:.1f}s"])
    return format_table(headers, rows)


def device_identity(connection: SSHConnection) -> str:
    """One running machine: its host key and this boot's id. The key alone is not
    enough: SD cards cloned after first boot give a fleet of Pis one host key."""
    boot = connection.run("cat /proc/sys/kernel/random/boot_id", timeout=30)
    return f"{connection.host_key_fingerprint()} {boot.out.strip() if boot.ok else '?'}"


class SameDevice:
    """Notices two ``--host`` values that reach one device (:func:`device_identity`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._first: dict[str, str] = {}

    def claim(self, host: str, identity: str) -> str | None:
        """None for the first host with this identity; else the host that already has it."""
        with self._lock:
            first = self._first.setdefault(identity, host)
        return None if first == host else first


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain left-aligned text table."""
    cells = [[str(c) for c in headers]] + [[("" if c is None else str(c)) for c in row]
                                           for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
