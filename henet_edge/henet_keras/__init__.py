"""HENet and its ShuffleNet baseline in Keras.

Importing this package imports neither TensorFlow nor Keras and leaves ``os.environ``
alone. The builders are the real functions of :mod:`.henet` and :mod:`.shufflenet`
(with their signatures and docstrings), loaded on first use; the families and their
facts are in :mod:`.registry`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .registry import ModelSpec, model_names, model_spec, register_model

if TYPE_CHECKING:
    from .henet import build_henet
    from .shufflenet import build_shufflenet

__all__ = ["ModelSpec", "build_henet", "build_model", "build_shufflenet", "model_names",
           "model_spec", "register_model"]

_LAZY = {"build_henet": "henet", "build_shufflenet": "shufflenet"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return model_spec(_LAZY[name]).builder_function()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_model(family: str, /, **kwargs: Any):
    """Build a model by family name (see :func:`.registry.model_names`)."""
    return model_spec(family).build(**kwargs)
