"""TensorFlow settings that only work when made before TensorFlow is imported."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

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
# Python-side noise of TensorFlow and its converter (C++ noise goes by file descriptor).
_QUIET_LOGGERS = ("absl", "tensorflow", "h5py")


@contextmanager
def quiet_native_logs(verbose: bool = False) -> Iterator[None]:
    """Hide what TensorFlow, its converter and XNNPACK print, unless ``verbose``.

    Their C++ code writes straight to file descriptor 2, so that descriptor is
    pointed at ``/dev/null`` for the duration, while Python's ``sys.stderr`` (our
    own messages, progress bars, tracebacks) keeps writing to the real stderr.
    Their Python warnings and loggers are silenced too.
    """
    if verbose:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    old_stderr, real = sys.stderr, None
    try:
        is_fd2 = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # captured (tests): leave it as it is
        is_fd2 = False
    if is_fd2:
        real = open(saved, "w", buffering=1, closefd=False,  # noqa: SIM115 - restored below
                    encoding=getattr(old_stderr, "encoding", None) or "utf-8",
                    errors="backslashreplace")
        sys.stderr = real
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    levels = {name: logging.getLogger(name).level for name in _QUIET_LOGGERS}
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"(tensorflow|keras|absl)(\.|$)")
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        if real is not None:
            real.flush()
            sys.stderr = old_stderr
        os.dup2(saved, 2)
        os.close(saved)
