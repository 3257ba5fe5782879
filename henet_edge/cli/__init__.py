"""The ``henet-edge`` command line: thin shells over library functions.

One module per group of ``--help``: :mod:`.desktop` (train and convert), :mod:`.deploy`
(to devices over SSH) and :mod:`.device` (on the Pi), all on the group in :mod:`.base`.
Nothing here imports TensorFlow at module import time; commands that need it import
it when they run, so ``henet-edge classify`` on a Pi starts fast.
"""

from . import deploy, desktop, device  # noqa: F401  (each registers its commands)
from .base import main

__all__ = ["main"]
