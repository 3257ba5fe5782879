"""Frame sources and the classify-every-frame loop: ``henet-edge camera``.

A source is ``auto``, ``picamera2[:N]``, ``opencv:N``, a video file or a
folder of images (the last two stand in for a camera in tests and demos).
Every source yields RGB ``uint8`` frames ``(H, W, 3)``: picamera2's
``RGB888``/``XRGB8888`` formats and OpenCV deliver B, G, R byte order, which
:func:`bgr_to_rgb` converts. OpenCV and picamera2 are imported only when such
a source is opened.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from henet_edge import HenetEdgeError

from .classify import Classifier
from .inputs import IMAGE_KINDS, file_kind, iter_inputs, printable
from .preprocess import open_image, to_rgb

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".h264", ".mjpeg")
OPENCV_FIX = "`pip install opencv-python-headless`"
PICAMERA2_FIX = ("on Raspberry Pi OS: `sudo apt install python3-picamera2`, and make the "
                 "virtualenv with `python3 -m venv --system-site-packages` so it can see it")
PICAMERA2_SIZE = (320, 240)
FRAME_DRAFT = 240  # a folder's frames are reduced to about a camera's size


class CameraError(HenetEdgeError, RuntimeError):
    """A frame source that cannot be opened, or stopped delivering frames."""


class BadFrame(CameraError):
    """One frame that cannot be used; the source can go on with the next."""


def bgr_to_rgb(frame: np.ndarray) -> np.ndarray:
    """RGB ``uint8 (H, W, 3)`` from a B, G, R[, X] frame (OpenCV, picamera2 ``RGB888``).

    Grayscale ``(H, W)`` frames are repeated into three channels.
    """
    frame = np.asarray(frame)
    if frame.ndim == 2:
        return np.repeat(frame[:, :, None], 3, axis=2).astype(np.uint8)
    if frame.ndim != 3 or frame.shape[2] not in (3, 4):
        raise CameraError(f"unexpected frame shape {frame.shape}; expected (H, W, 3 or 4)")
    return np.ascontiguousarray(frame[:, :, 2::-1], dtype=np.uint8)


class FrameSource:
    """Base class: ``read()`` returns the next RGB frame, or ``None`` at the end."""

    name = "source"

    def read(self) -> np.ndarray | None:
        raise NotImplementedError

    def close(self) -> None:
        """Release the device (no-op by default)."""

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FolderSource(FrameSource):
    """Images of a folder (sorted, recursive), one frame each, then the end.

    A file that cannot be decoded raises :class:`BadFrame`; the next
    ``read()`` goes on with the file after it.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.name = printable(self.folder)
        self.files = list(iter_inputs([self.folder]))
        if not any(problem is None for _, problem in self.files):
            raise CameraError(f"{self.name}: no {IMAGE_KINDS} images to use as frames")
        self._next = 0

    def read(self) -> np.ndarray | None:
        if self._next >= len(self.files):
            return None
        path, problem = self.files[self._next]
        self._next += 1
        try:
            if problem is not None:
                raise ValueError(problem)
            image = open_image(str(path), draft_size=FRAME_DRAFT)
            return np.asarray(to_rgb(image, min_side=FRAME_DRAFT), dtype=np.uint8)
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise BadFrame(f"skipped {printable(path)}: {printable(str(reason))}") from None


def _import_cv2() -> Any:
    try:
        import cv2
    except ImportError:
        raise CameraError(f"OpenCV is not installed: {OPENCV_FIX}") from None
    return cv2


class OpenCVSource(FrameSource):
    """A camera (``opencv:N``) or a video file read through OpenCV (BGR frames)."""

    def __init__(self, target: int | str | Path):
        cv2 = _import_cv2()
        self.live = isinstance(target, int)
        self.name = f"opencv:{target}" if self.live else str(target)
        self._capture = cv2.VideoCapture(target if self.live else str(target))
        if not self._capture.isOpened():
            self._capture.release()
            if self.live:
                raise CameraError(f"no camera at opencv:{target} (/dev/video{target}); check "
                                  "the cable and `ls /dev/video*`, or try another index")
            raise CameraError(f"{target}: OpenCV cannot open this video")
        self.count = 0

    def read(self) -> np.ndarray | None:
        ok, frame = self._capture.read()
        if not ok or frame is None:
            if self.live:
                raise CameraError(f"camera {self.name} stopped delivering frames after "
                                  f"{self.count} (disconnected?)")
            if self.count == 0:
                raise CameraError(f"{self.name}: no frame could be decoded (a corrupt or "
                                  "unsupported video)")
            return None
        self.count += 1
        return bgr_to_rgb(frame)

    def close(self) -> None:
        self._capture.release()


def _picamera2_class() -> Any:
    try:
        from picamera2 import Picamera2
    except ImportError:
        raise CameraError(f"picamera2 is not importable: {PICAMERA2_FIX}") from None
    return Picamera2


class Picamera2Source(FrameSource):
    """A Raspberry Pi camera through picamera2 (``RGB888`` frames are B, G, R)."""

    def __init__(self, index: int = 0, size: tuple[int, int] = PICAMERA2_SIZE):
        picamera2 = _picamera2_class()
        self.name = f"picamera2:{index}"
        try:
            cameras = picamera2.global_camera_info()
        except Exception as exc:  # libcamera problems surface as many types
            raise CameraError(f"picamera2 cannot list cameras: {exc}") from None
        if index >= len(cameras):
            raise CameraError(f"no camera {index} found by libcamera ({len(cameras)} found); "
                              "check the ribbon cable and `rpicam-hello --list-cameras`")
        try:
            self._camera = picamera2(index)
            config = self._camera.create_preview_configuration(
                main={"size": size, "format": "RGB888"})
            self._camera.configure(config)
            self._camera.start()
        except Exception as exc:
            raise CameraError(f"cannot start {self.name}: {exc}") from None
        self.count = 0

    def read(self) -> np.ndarray | None:
        try:
            frame = self._camera.capture_array("main")
        except Exception as exc:
            raise CameraError(f"camera {self.name} stopped delivering frames after "
                              f"{self.count}: {exc}") from None
        self.count += 1
        return bgr_to_rgb(frame)

    def close(self) -> None:
        try:
            self._camera.stop()
            self._camera.close()
        except Exception:  # closing a camera that already vanished
            pass


def open_source(spec: str) -> FrameSource:
    """Open ``auto``, ``picamera2[:N]``, ``opencv:N``, a video file or an image folder."""
    if not spec.strip():
        raise CameraError("--source is empty: give auto, picamera2, opencv:N, a video file "
                          "or a folder (. for the current one)")
    spec = spec.strip()
    if spec == "auto":
        problems = []
        for attempt in ("picamera2", "opencv:0"):
            try:
                return open_source(attempt)
            except CameraError as exc:
                problems.append(f"{attempt}: {exc}")
        raise CameraError("no camera found. " + " | ".join(problems))
    if spec == "picamera2" or spec.startswith("picamera2:"):
        return Picamera2Source(_index(spec))
    if spec.startswith("opencv:"):
        return OpenCVSource(_index(spec))
    path = Path(spec).expanduser()
    if path.is_dir():
        return FolderSource(path)
    if path.exists() and not path.is_file():
        raise CameraError(f"{printable(path)}: not a regular file: "
                          f"{file_kind(path.stat().st_mode)}")
    if path.is_file():
        if path.suffix.lower() in VIDEO_SUFFIXES:
            return OpenCVSource(path)
        raise CameraError(f"{path}: not a video ({', '.join(VIDEO_SUFFIXES)}) or a folder")
    if path.suffix.lower() in VIDEO_SUFFIXES:
        raise CameraError(f"{path}: no such file")
    raise CameraError(f"unknown source {spec!r}: use auto, picamera2, opencv:N, a video "
                      "file or a folder of images")


def _index(spec: str) -> int:
    kind, _, number = spec.partition(":")
    if not number:
        return 0
    if not number.isdigit():
        raise CameraError(f"bad camera index in {spec!r}; expected a number like {kind}:0")
    return int(number)


@dataclass
class FrameResult:
    """One classified frame."""

    frame: int
    label: str
    probability: float
    top: list[tuple[str, float]]
    timings_ms: dict[str, float]
    fps: float

    def to_dict(self) -> dict[str, Any]:
        return {"frame": self.frame, "label": self.label,
                "probability": round(self.probability, 6),
                "top": [{"label": lab, "probability": round(p, 6)} for lab, p in self.top],
                "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()},
                "fps": round(self.fps, 2)}

    def format(self) -> str:
        times = ", ".join(f"{k} {v:.2f}" for k, v in self.timings_ms.items())
        return (f"frame {self.frame}: {self.label} {self.probability:.1%}  "
                f"[ms: {times}]  {self.fps:.1f} fps")


def run(classifier: Classifier, source: FrameSource, *, frames: int = 0, every: float = 0.0,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], None] = time.sleep,
        on_bad_frame: Callable[[str], None] | None = None) -> Iterator[FrameResult]:
    """Classify frames from ``source`` until it ends or ``frames`` (0: no limit) are done.

    ``every`` spaces frame starts at least that many seconds apart. ``fps`` is
    the running rate of frame starts since the first capture (one frame: its own
    time). A bad frame (:class:`BadFrame`) is passed to ``on_bad_frame`` and
    skipped; ``frames`` counts good frames. A source that fails mid-run raises
    :class:`CameraError` after the frames already yielded.
    """
    if frames < 0:
        raise CameraError(f"--frames must be 0 (no limit) or more, got {frames}")
    if not (math.isfinite(every) and every >= 0):
        raise CameraError(f"--every must be 0 or more seconds, got {every}")
    start = clock()
    done = 0
    while frames == 0 or done < frames:
        t0 = clock()
        try:
            frame = source.read()
        except BadFrame as exc:
            if on_bad_frame is None:
                raise
            on_bad_frame(str(exc))
            continue
        if frame is None:
            return
        capture = (clock() - t0) * 1000.0
        prediction = classifier.classify_rgb(frame)
        done += 1
        timings = {"capture": capture, **prediction.timings_ms}
        if done > 1:  # frames begun per second: intervals between the first and this start
            span, count = t0 - start, done - 1
        else:
            span, count = clock() - start, 1
        yield FrameResult(done, prediction.label, prediction.probability, prediction.top,
                          timings, count / span if span > 0 else 0.0)
        if every > 0 and (frames == 0 or done < frames):
            wait = t0 + every - clock()
            if wait > 0:
                sleep(wait)
