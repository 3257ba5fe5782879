"""The live camera of ``henet-edge serve --camera``: frames classified in a thread.

The frames come from :func:`henet_edge.device.camera.open_source` and are
classified by :func:`henet_edge.device.camera.run`, the loop of ``henet-edge
camera``; this module only keeps the latest frame (as JPEG, for the MJPEG
stream) and its result (for the page and the event stream), and records a
camera that fails so the page and ``/healthz`` can say so while uploads go on.
A video file or a folder of images starts again from the top when it ends.
"""

from __future__ import annotations

import contextlib
import io
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from henet_edge import HenetEdgeError

from ..camera import BadFrame, CameraError, FrameSource, Picamera2Source, open_source, run
from ..classify import Prediction

JPEG_QUALITY = 80


class _Repeating(FrameSource):
    """A source that reopens recorded ones (a folder, a video file) at their end and
    keeps the last frame it read.

    A bad frame (:class:`BadFrame`, an image that cannot be decoded) is passed on
    to be skipped; a whole pass without one good frame is a :class:`CameraError`.
    """

    def __init__(self, spec: str, opener: Callable[[str], FrameSource]):
        self.spec, self.opener = spec, opener
        self.inner = opener(spec)
        self.name = self.inner.name
        self.live = getattr(self.inner, "live", isinstance(self.inner, Picamera2Source))
        self.last: np.ndarray | None = None
        self._good_this_pass = False
        self._last_skip: str | None = None

    def read(self) -> np.ndarray | None:
        try:
            frame = self.inner.read()
            if frame is None and not self.live:
                if not self._good_this_pass:
                    raise CameraError(f"frame source {self.name} gives no frames"
                                      + (f" (every one skipped; last: {self._last_skip})"
                                         if self._last_skip else ""))
                self.inner.close()
                self.inner = self.opener(self.spec)
                self._good_this_pass = False
                frame = self.inner.read()
                if frame is None:
                    raise CameraError(f"frame source {self.name} gives no frames")
        except BadFrame as exc:
            self._last_skip = str(exc)
            raise
        self._good_this_pass = True
        self.last = frame
        return frame

    def close(self) -> None:
        self.inner.close()


class _Classify:
    """The one method :func:`run` needs, through the server's interpreter pool."""

    def __init__(self, classify_rgb: Callable[[np.ndarray], Prediction]):
        self.classify_rgb = classify_rgb


@dataclass
class Snapshot:
    """The newest frame (JPEG) and its result; ``seq`` grows with every frame."""

    seq: int
    jpeg: bytes | None
    result: dict[str, Any] | None
    status: dict[str, Any]


class LiveCamera:
    """Read, classify and keep the newest frame of ``spec`` in a background thread.

    Args:
        spec: a ``henet-edge camera --source`` value.
        classify_rgb: classifies one RGB frame (the server's pool).
        every: seconds between frame starts (paces folders and videos).
        on_frame: called once per classified frame (the metrics' frame counter).
    """

    def __init__(self, spec: str, classify_rgb: Callable[[np.ndarray], Prediction], *,
                 every: float = 0.1, on_frame: Callable[[], None] = lambda: None,
                 opener: Callable[[str], FrameSource] = open_source):
        if every < 0:
            raise CameraError(f"--every must be 0 or more seconds, got {every}")
        self.spec, self.every, self.on_frame, self.opener = spec, every, on_frame, opener
        self.classifier = _Classify(classify_rgb)
        self.name = spec
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seq, self._jpeg, self._result = 0, None, None
        self._state, self._error, self._since = "starting", None, time.time()
        self._skipped, self._last_skip = 0, None

    def start(self) -> LiveCamera:
        self._thread = threading.Thread(target=self._loop, name="henet-camera", daemon=True)
        self._thread.start()
        return self

    def halt(self) -> None:
        """Ask the thread to stop (and the streams to end) without waiting."""
        self._stop.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and release the camera."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _skipped_frame(self, message: str) -> None:
        """A frame that could not be used (an undecodable image in a folder): counted
        and named in the status, the stream goes on with the next."""
        with self._lock:
            self._skipped += 1
            self._last_skip = message

    def _set_state(self, state: str, error: str | None = None) -> None:
        with self._lock:
            self._state, self._error, self._since = state, error, time.time()

    def _loop(self) -> None:
        source: _Repeating | None = None
        try:
            source = _Repeating(self.spec, self.opener)
            self.name = source.name
            self._set_state("running")
            for result in run(self.classifier, source, every=self.every,
                              sleep=self._stop.wait, on_bad_frame=self._skipped_frame):
                if self._stop.is_set():
                    break
                jpeg = _jpeg(source.last)
                with self._lock:
                    self._seq += 1
                    self._jpeg = jpeg
                    self._result = {**result.to_dict(), "source": self.name}
                self.on_frame()
            self._set_state("stopped")
        except HenetEdgeError as exc:
            self._set_state("failed", str(exc))
        except Exception as exc:  # a camera library failing in its own way
            self._set_state("failed", f"{type(exc).__name__}: {exc}")
        finally:
            if source is not None:
                with contextlib.suppress(Exception):  # closing a device that vanished
                    source.close()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def status(self) -> dict[str, Any]:
        """``source``, ``state`` (starting, running, failed, stopped), ``error``, ``frames``,
        ``skipped`` (bad frames passed over) and ``last_skipped`` (why the last one was)."""
        with self._lock:
            return {"source": self.name, "state": self._state, "ok": self._state == "running",
                    "error": self._error, "frames": self._seq, "skipped": self._skipped,
                    "last_skipped": self._last_skip,
                    "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._since))}

    def snapshot(self) -> Snapshot:
        status = self.status()
        with self._lock:
            return Snapshot(self._seq, self._jpeg, self._result, status)


def _jpeg(frame: np.ndarray | None) -> bytes | None:
    if frame is None:
        return None
    buf = io.BytesIO()
    Image.fromarray(frame, "RGB").save(buf, "JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()

