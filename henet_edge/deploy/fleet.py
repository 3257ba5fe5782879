"""Several hosts at once: bounded parallelism, one failure never stops the others.

:func:`run_fleet` calls ``work(host, index)`` for every host on a thread pool
of ``jobs`` workers and returns one :class:`HostOutcome` per host, in the
order given. A user error (:class:`~henet_edge.HenetEdgeError`) becomes that
host's one-line error; anything unexpected is reported the same way with its
type, so a crash on one device still lets the rest finish.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from henet_edge import HenetEdgeError


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


def run_fleet(hosts: Sequence[str], work: Callable[[str, int], dict[str, Any]], *,
              jobs: int = 4) -> list[HostOutcome]:
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
    return [o for o in outcomes if o is not None]


class SameDevice:
    """Notices two ``--host`` values that reach one device (the same host key)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._first: dict[str, str] = {}

    def claim(self, host: str, host_key: str) -> str | None:
        """None for the first host with this key; else the host that already has it."""
        with self._lock:
            first = self._first.setdefault(host_key, host)
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
