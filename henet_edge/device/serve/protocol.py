"""uvicorn's HTTP protocol with a deadline on every request's head.

uvicorn waits for a request's headers for ever: a client that opens connections and
sends a few header bytes on each, before any token can be checked, holds them until
the process runs out of file descriptors and nobody else is answered. Here a
connection whose request line and headers have not all arrived within
``head_timeout`` seconds of its first byte (or of opening) is closed. Bodies have
their own limit in the app (408), idle keep-alive connections uvicorn's own.
"""

from __future__ import annotations

import asyncio
from typing import Any

HEAD_TIMEOUT_S = 10.0


class _HeadDeadline:
    """A mixin for uvicorn's protocol classes (h11 and httptools keep ``cycle`` alike)."""

    head_timeout = HEAD_TIMEOUT_S
    _head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._head_deadline is None and self._awaiting_head():
            self._arm()  # the first bytes of the next request on a kept-alive connection
        super().data_received(data)  # type: ignore[misc]
        if not self._awaiting_head():
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def _awaiting_head(self) -> bool:
        cycle = self.cycle  # type: ignore[attr-defined]
        return cycle is None or cycle.response_complete

    def _arm(self) -> None:
        self._head_deadline = self.loop.call_later(  # type: ignore[attr-defined]
            self.head_timeout, self._head_late)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_late(self) -> None:
        self._head_deadline = None
        transport = self.transport  # type: ignore[attr-defined]
        if self._awaiting_head() and not transport.is_closing():
            transport.close()


def http_protocol(head_timeout: float = HEAD_TIMEOUT_S) -> type[asyncio.Protocol]:
    """The protocol class for ``uvicorn.Config(http=...)``: httptools' when it is
    installed (as uvicorn's "auto" picks), else the pure-Python h11's."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    except ImportError:  # httptools is optional: nothing to compile on a Pi
        from uvicorn.protocols.http.h11_impl import H11Protocol as base
    return type(f"{base.__name__}WithHeadDeadline", (_HeadDeadline, base),
                {"head_timeout": head_timeout})
