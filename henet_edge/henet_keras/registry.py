"""The model families, one :class:`ModelSpec` each, looked up by name (like timm's registry).

A spec carries every fact about a family that the rest of the project needs: its builder
(imported only when a model is built, so looking a family up never imports TensorFlow),
whether it accepts ``--width``, how the paper counts its parameters, its rows of the
paper's Table 3 and its display name. A new family is one :func:`register_model` call.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from henet_edge import HenetEdgeError


class ModelArgumentError(HenetEdgeError, ValueError):
    """Arguments no model of a family can be built with."""


class UnknownModelError(ModelArgumentError):
    """A family name that is not registered."""


@dataclass(frozen=True)
class PaperRow:
    """One row of the paper's Table 3 (CIFAR-10; time = 1000 passes on one core)."""

    accuracy: float
    params_k: int
    mflops: float
    time_s: float

    def as_dict(self) -> dict[str, float]:
        return {"accuracy": self.accuracy, "params_k": self.params_k, "mflops": self.mflops,
                "time_s": self.time_s}


@dataclass(frozen=True)
class ModelSpec:
    """A model family: how to build it and how the paper counts and reports it.

    ``conv_bias`` is the paper's counting rule: HENet's Caffe convs carry a bias term,
    ShuffleNet's do not. ``signature_layer`` ends the name of a layer that only this
    family's builder makes, so a saved model is recognised whatever its ``name=``.
    ``builder`` is ``"module:function"``; the function takes
    ``repeat``, ``classes``, ``input_size`` and the keyword arguments both builders share,
    plus ``width_multiplier`` when ``accepts_width``.
    """

    name: str
    display_name: str
    builder: str
    accepts_width: bool
    conv_bias: bool
    signature_layer: str
    paper: Mapping[int, PaperRow] = field(default_factory=dict)

    def build(self, *, repeat: int = 3, classes: int = 10, width_multiplier: float = 1.0,
              **kwargs: Any):
        """Build a Keras model of this family (imports TensorFlow)."""
        check_model_args(repeat, classes)
        self.check_width(width_multiplier)
        if self.accepts_width:
            kwargs["width_multiplier"] = width_multiplier
        return self.builder_function()(repeat=repeat, classes=classes, **kwargs)

    def check_width(self, width_multiplier: float) -> None:
        """Refuse a width other than 1 for a family that has no width multiplier."""
        if not self.accepts_width and width_multiplier != 1.0:
            raise ModelArgumentError(f"{self.display_name} has no width multiplier; "
                                     "--width works only for: " + ", ".join(
                                         s.name for s in _REGISTRY.values() if s.accepts_width))

    def builder_function(self) -> Callable[..., Any]:
        from .tf_env import prepare_tensorflow

        prepare_tensorflow()  # before the builder's module imports Keras
        module, _, function = self.builder.partition(":")
        return getattr(importlib.import_module(module), function)

_REGISTRY: dict[str, ModelSpec] = {}


def run_name(family: str, repeat: int) -> str:
    """``henet-r3``: how a model is named in run folders, tables and comparison rows."""
    return f"{family}-r{repeat}"


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add a family to the registry (its name must be new)."""
    if spec.name in _REGISTRY:
        raise ValueError(f"model family {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def model_spec(name: str) -> ModelSpec:
    """The family called ``name``; an :class:`UnknownModelError` names the choices."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}; choose one of: "
                                f"{', '.join(_REGISTRY)}") from None


def model_names() -> tuple[str, ...]:
    """Registered family names, in registration order."""
    return tuple(_REGISTRY)


def detect_family(model: Any) -> ModelSpec | None:
    """The family a built Keras model belongs to, from its layers (None if no family's)."""
    names = [layer.name for layer in model.layers]
    found = [s for s in _REGISTRY.values()
             if any(n.endswith(s.signature_layer) for n in names)]
    return found[0] if len(found) == 1 else None


def check_model_args(repeat: int, classes: int, *, option_prefix: str = "") -> None:
    """The argument rules every builder shares (messages name ``option_prefix + name``)."""
    if repeat < 1:
        raise ModelArgumentError(f"{option_prefix}repeat must be at least 1, got {repeat}")
    if classes < 2:
        raise ModelArgumentError(f"{option_prefix}classes must be at least 2, got {classes}")


def paper_table() -> dict[tuple[str, int], PaperRow]:
    """Every family's rows of the paper's Table 3, keyed by (family, repeat)."""
    return {(s.name, r): row for s in _REGISTRY.values() for r, row in s.paper.items()}


def paper_row(family: str, repeat: int) -> dict[str, float] | None:
    """The paper's Table 3 row for ``family`` at ``repeat`` as a dict, or None."""
    row = model_spec(family).paper.get(repeat)
    return row.as_dict() if row else None


HENET = register_model(ModelSpec(
    name="henet", display_name="HENet", builder="henet_edge.henet_keras.henet:build_henet",
    accepts_width=True, conv_bias=True, signature_layer="s4down_pw_conv",
    paper=MappingProxyType({
        2: PaperRow(88.67, 507, 7.3, 3.524),
        3: PaperRow(89.40, 641, 10.2, 4.846),
        4: PaperRow(89.83, 775, 13.2, 6.184),
    })))

SHUFFLENET = register_model(ModelSpec(
    name="shufflenet", display_name="ShuffleNet",
    builder="henet_edge.henet_keras.shufflenet:build_shufflenet",
    accepts_width=False, conv_bias=False, signature_layer="_dw_conv",
    paper=MappingProxyType({
        2: PaperRow(87.07, 357, 6.1, 4.772),
        3: PaperRow(88.03, 515, 8.5, 6.589),
        4: PaperRow(88.23, 674, 10.9, 8.344),
        5: PaperRow(88.57, 833, 13.3, 10.156),
    })))
