"""Interpreters of one model lent to one request (or camera frame) at a time."""

from __future__ import annotations

import contextlib
import queue
import time
from collections.abc import Iterator, Sequence
from typing import BinaryIO

import numpy as np

from ..classify import Classifier, Prediction


class ClassifierPool:
    """One or more :class:`Classifier` of the same model, each used by one thread at a time.

    A TFLite interpreter is not thread-safe; several of them let requests run
    side by side where the cores allow (the runtime releases the GIL in invoke).
    """

    def __init__(self, classifiers: Classifier | Sequence[Classifier]):
        members = [classifiers] if isinstance(classifiers, Classifier) else list(classifiers)
        if not members:
            raise ValueError("a pool needs at least one classifier")
        self.first = members[0]
        self.size = len(members)
        self._free: queue.SimpleQueue[Classifier] = queue.SimpleQueue()
        for member in members:
            self._free.put(member)

    @contextlib.contextmanager
    def borrow(self) -> Iterator[Classifier]:
        """A free classifier for the block (waits for one)."""
        member = self._free.get()
        try:
            yield member
        finally:
            self._free.put(member)

    def classify_rgb(self, frame: np.ndarray) -> Prediction:
        """A camera frame, as :meth:`Classifier.classify_rgb`."""
        with self.borrow() as member:
            return member.classify_rgb(frame)

    def classify_upload(self, data: BinaryIO) -> Prediction:
        """An uploaded image file, timed like ``classify`` times a file (decode first).

        ``ValueError`` for anything that is not a whole image (as :meth:`Classifier.open_file`).
        """
        t0 = time.perf_counter()
        image = self.first.open_file(data)  # as `classify` decodes a file
        decode = (time.perf_counter() - t0) * 1000.0
        with self.borrow() as member:
            prediction = member.classify_image(image)
        prediction.timings_ms = {"decode": decode, **prediction.timings_ms}
        return prediction
