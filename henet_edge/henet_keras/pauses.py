"""How long this process was stopped (SIGSTOP, Ctrl-Z, a suspended machine).

An epoch's wall time includes any time the job was paused, so its images/s would
understate the machine. A heartbeat thread notes the monotonic clock every
:data:`TICK` seconds; a gap longer than :data:`GAP` means the process did not run
at all (a nice-19 thread that wakes is scheduled within milliseconds even on a
busy machine), and the gap beyond one tick counts as paused.
"""

from __future__ import annotations

import threading
import time

TICK = 0.5  # seconds between heartbeats
GAP = 2.0  # a heartbeat this late means the process was stopped


def active_seconds(row: dict) -> float:
    """An epoch history row's wall seconds less the time the job was stopped.

    Rows written before ``paused_seconds`` was recorded count their whole wall time.
    """
    return row["seconds"] - row.get("paused_seconds", 0.0)


class PauseClock:
    """Total seconds the process was stopped since :meth:`start`."""

    def __init__(self, tick: float = TICK, gap: float = GAP):
        self.tick, self.gap = tick, gap
        self._paused = 0.0
        self._last: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def note(self, now: float) -> None:
        """One heartbeat at monotonic time ``now``."""
        with self._lock:
            if self._last is not None and now - self._last > self.gap:
                self._paused += now - self._last - self.tick
            self._last = now

    def paused(self) -> float:
        """Seconds stopped so far (up to the latest heartbeat)."""
        self.note(time.monotonic())
        with self._lock:
            return self._paused

    def start(self) -> PauseClock:
        self.note(time.monotonic())
        self._thread = threading.Thread(target=self._beat, name="pause-clock", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self.tick):
            self.note(time.monotonic())
