"""How the grouped convs and channel shuffles become TFLite ops.

``grouped`` keeps the Keras graph as it is: each grouped conv is one
``CONV_2D`` with grouped filters and each channel shuffle is
reshape -> transpose -> reshape. ``folded`` removes a channel shuffle by
folding it into the 1x1 conv that produces it: that conv becomes a dense conv
on block-diagonal weights whose output channels come out already shuffled
(its batch norm, and a ReLU, are per channel, so they follow the permutation).
The function is exactly the same; the 1x1 conv does ``groups`` times more
multiply-accumulates, and a transpose and a tiny-group GEMM disappear.

Which shuffles pay for themselves depends on the CPU and on the feature-map
size: ``min_size`` folds those on maps at least that wide. ``dense`` goes
further: the shuffles ``folded-all`` folds, every other shuffle into the conv
after it (its input channels permuted), and every other grouped conv a dense
conv on block-diagonal weights (``groups`` times the multiply-accumulates, all in the
runtime's dense kernels, which some CPUs run far faster in int8 than its
grouped ones). ``henet-edge compare --lowering ...`` times the lowerings side
by side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

LOWERINGS = ("grouped", "folded", "folded-all", "dense")
DEFAULT_LOWERING = "folded"  # faster for HENet in both precisions (README, "compare")


@dataclass(frozen=True)
class Lowering:
    name: str
    min_size: int | None  # fold shuffles on maps at least this wide; None: fold none
    dense: bool = False  # every other grouped conv as a dense block-diagonal one too

    @classmethod
    def parse(cls, name: str, input_size: int = 31) -> Lowering:
        if name == "grouped":
            return cls(name, None)
        if name == "folded":  # the full-resolution stage only (where it pays on x86 and Arm)
            return cls(name, input_size)
        if name == "folded-all":
            return cls(name, 1)
        if name == "dense":
            return cls(name, 1, dense=True)
        raise ValueError(f"unknown lowering {name!r}; choose one of: {', '.join(LOWERINGS)}")


def shuffle_source(channels: int, groups: int) -> np.ndarray:
    """``out[k] = in[source[k]]`` for :class:`ChannelShuffle` with ``groups`` groups."""
    import numpy as np

    per = channels // groups
    k = np.arange(channels)
    return (k % groups) * per + k // groups


def dense_kernel(kernel: np.ndarray, groups: int) -> np.ndarray:
    """A grouped ``(kh, kw, C_in/g, C_out)`` kernel as a block-diagonal dense one."""
    import numpy as np

    kh, kw, cin_g, c_out = kernel.shape
    cout_g = c_out // groups
    dense = np.zeros((kh, kw, cin_g * groups, c_out), kernel.dtype)
    for g in range(groups):
        dense[:, :, g * cin_g:(g + 1) * cin_g, g * cout_g:(g + 1) * cout_g] = \
            kernel[:, :, :, g * cout_g:(g + 1) * cout_g]
    return dense


def _producer_chain(shuffle_layer):
    """``(conv, [per-channel layers])`` feeding a shuffle, or None if not a foldable 1x1 conv."""
    from keras import layers

    chain = []
    op = shuffle_layer.input._keras_history.operation
    while isinstance(op, (layers.BatchNormalization, layers.ReLU)):
        chain.append(op)
        op = op.input._keras_history.operation
    if (isinstance(op, layers.Conv2D) and not isinstance(op, layers.DepthwiseConv2D)
            and tuple(op.kernel_size) == (1, 1) and op.strides == (1, 1)
            and not op.use_bias and op.groups > 1 and op.groups == shuffle_layer.groups):
        return op, chain
    return None


def foldable_shuffles(model, lowering: Lowering) -> dict[str, tuple]:
    """``{shuffle name: (conv, chain)}`` for the shuffles ``lowering`` folds."""
    from henet_edge.henet_keras.layers import ChannelShuffle

    if lowering.min_size is None:
        return {}
    out = {}
    for layer in model.layers:
        if isinstance(layer, ChannelShuffle) and layer.input.shape[2] >= lowering.min_size:
            found = _producer_chain(layer)
            if found:
                out[layer.name] = found
    return out


def shuffles_into_next_conv(model, folds: dict) -> dict[str, tuple[str, int]]:
    """``{shuffle name: (conv name, groups)}``: each shuffle not in ``folds`` that feeds
    one conv only (not a depthwise one), which can take it into its input channels."""
    from keras import layers

    from henet_edge.henet_keras.layers import ChannelShuffle

    out = {}
    for layer in model.layers:
        if isinstance(layer, ChannelShuffle) and layer.name not in folds:
            consumers = [node.operation for node in layer._outbound_nodes]
            if (len(consumers) == 1 and isinstance(consumers[0], layers.Conv2D)
                    and not isinstance(consumers[0], layers.DepthwiseConv2D)):
                out[layer.name] = (consumers[0].name, layer.groups)
    return out


def lower(model, lowering: Lowering | str):
    """``model`` with the chosen lowering: same function, different ops (inference only)."""
    import keras
    import numpy as np
    from keras import layers

    if isinstance(lowering, str):
        lowering = Lowering.parse(lowering, model.inputs[0].shape[1])
    folds = foldable_shuffles(model, lowering)
    groups_of = {conv.name: conv.groups for conv, _ in folds.values()}
    groups_of.update({layer.name: conv.groups for conv, chain in folds.values()
                      for layer in chain})
    densify = {layer.name: layer.groups for layer in model.layers if lowering.dense
               and isinstance(layer, layers.Conv2D) and layer.groups > 1
               and layer.name not in groups_of}  # dense, outputs in their own order
    into_next = shuffles_into_next_conv(model, folds) if lowering.dense else {}
    takes_shuffle = dict(into_next.values())  # conv name -> groups of the shuffle before it
    if not folds and not densify and not into_next:
        return model

    def clone(layer):
        config = layer.get_config()
        if layer.name in folds or layer.name in into_next:
            return layers.Identity(name=layer.name)
        if isinstance(layer, layers.Conv2D) and (layer.name in groups_of
                                                 or layer.name in densify):
            config["groups"] = 1
        return layer.__class__.from_config(config)

    lowered = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        weights = layer.get_weights()
        groups = groups_of.get(layer.name)
        if groups and isinstance(layer, layers.Conv2D):  # dense, outputs in shuffled order
            kernel = dense_kernel(weights[0], groups)
            weights = [kernel[..., shuffle_source(kernel.shape[-1], groups)]]
        elif layer.name in densify:
            weights = [dense_kernel(weights[0], densify[layer.name]), *weights[1:]]
        elif groups:  # batch norm: every per-channel vector follows the permutation
            weights = [w[shuffle_source(w.shape[0], groups)] for w in weights]
        if layer.name in takes_shuffle:  # conv(shuffle(x), K) == conv(x, K un-shuffled)
            source = shuffle_source(weights[0].shape[2], takes_shuffle[layer.name])
            weights = [weights[0][:, :, np.argsort(source), :], *weights[1:]]
        if weights:
            lowered.get_layer(layer.name).set_weights(weights)
    return lowered
