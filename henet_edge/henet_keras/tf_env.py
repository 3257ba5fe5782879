"""TensorFlow settings that only work when made before TensorFlow is imported."""

from __future__ import annotations

import os

ONEDNN = "TF_ENABLE_ONEDNN_OPTS"


def prepare_tensorflow() -> None:
    """Quiet TensorFlow's C++ logs and turn on its oneDNN CPU kernels.

    TensorFlow enables oneDNN by default only on some x86 CPUs; where it does
    not (this project's AMD development machine, for one), turning it on makes
    the masked training step about 1.4x faster (``benchmarks/train_speed.py``
    shows both). A value the user has set is kept. No effect once TensorFlow
    has been imported.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault(ONEDNN, "1")


def onednn_setting() -> str:
    """``TF_ENABLE_ONEDNN_OPTS`` as this process has it (``"unset"`` if not set)."""
    return os.environ.get(ONEDNN, "unset")
