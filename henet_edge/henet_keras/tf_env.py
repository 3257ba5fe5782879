"""TensorFlow settings that only work when made before TensorFlow is imported."""

from __future__ import annotations

import contextlib
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


def library_versions() -> dict[str, str]:
    """The versions a run or a bundle records: henet-edge, TensorFlow, Keras, numpy,
    Python, the oneDNN setting and, where installed, ai-edge-litert."""
    import platform
    from importlib import metadata

    import keras
    import numpy as np
    import tensorflow as tf

    from henet_edge import __version__

    versions = {"henet_edge": __version__, "tensorflow": tf.__version__,
                "keras": keras.__version__, "numpy": np.__version__,
                "python": platform.python_version(), "tf_enable_onednn_opts": onednn_setting()}
    with contextlib.suppress(metadata.PackageNotFoundError):
        versions["ai_edge_litert"] = metadata.version("ai-edge-litert")
    return versions
