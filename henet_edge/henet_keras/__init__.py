"""HENet and its ShuffleNet baseline in Keras.

Importing this package does not import TensorFlow; the builders do, when called.
Importing it does set TensorFlow's environment first (see :mod:`.tf_env`).
"""

from __future__ import annotations

from typing import Any

from .tf_env import prepare_tensorflow

prepare_tensorflow()

__all__ = ["MODEL_NAMES", "build_henet", "build_model", "build_shufflenet"]

MODEL_NAMES = ("henet", "shufflenet")


def build_henet(*args: Any, **kwargs: Any):
    """Build HENet; see :func:`henet_edge.henet_keras.henet.build_henet`."""
    from .henet import build_henet as _build

    return _build(*args, **kwargs)


def build_shufflenet(*args: Any, **kwargs: Any):
    """Build the ShuffleNet baseline; see :mod:`henet_edge.henet_keras.shufflenet`."""
    from .shufflenet import build_shufflenet as _build

    return _build(*args, **kwargs)


def build_model(name: str, **kwargs: Any):
    """Build a model by name (``henet`` or ``shufflenet``)."""
    if name == "henet":
        return build_henet(**kwargs)
    if name == "shufflenet":
        return build_shufflenet(**kwargs)
    raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}")
