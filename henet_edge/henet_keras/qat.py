"""Quantization-aware training: int8 rounding simulated in the training graph.

``--qat`` trains a copy of the network that rounds what the full-integer TFLite model
rounds, so the weights learn to tolerate it:

- **Weights**: every conv and dense kernel is fake-quantized per output channel,
  symmetric, to the 255 levels TFLite uses. TFLite folds each batch norm into the conv
  before it, scaling each output channel by ``gamma / sqrt(var + eps)``; symmetric
  per-channel rounding commutes with any per-channel scale, so rounding the unfolded
  kernel rounds exactly as the folded one is rounded.
- **Activations**: every tensor the int8 model stores (the input, each conv's output
  after its fused batch norm and ReLU, each add, each concat, the logits) is
  fake-quantized to 256 levels over the range TFLite's calibration gives it: the
  min and max over a calibration sample, widened to hold 0, one shared range for a
  concat and all its inputs (the converter requires it), and an add's range taken in
  by an input that nothing else reads (the converter's calibration sees that buffer
  overwritten in place). Reshapes, transposes, shuffles and flattens keep their
  input's scale, so they are left alone.

The ranges are measured once, on the starting weights, and stay fixed: a
fine-tune at a low rate barely moves them. They live in each :class:`FakeQuant`
layer's config, not in variables, so the copy has exactly the plain network's
weights in the same order and checkpoints, best weights and ``model.keras`` move
between the two with ``set_weights``. Gradients pass straight through the rounding
(and are cut outside a range), as in Jacob et al. (2018).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from .layers import ChannelShuffle, MaskedGroupConv2D

BITS = 8
CALIBRATION_IMAGES = 1000  # as many as the default model's `convert --num`
# Value-preserving ops, whose output TFLite stores at its input's scale.
_SAME_SCALE = (layers.Flatten, layers.Reshape, layers.InputLayer, ChannelShuffle)
# (producer, consumer): the converter fuses the producer's output into the consumer.
_FUSES_INTO = ((layers.Conv2D, layers.BatchNormalization),
               (layers.DepthwiseConv2D, layers.BatchNormalization),
               (layers.BatchNormalization, layers.ReLU), (layers.Add, layers.ReLU))


def fake_quant_kernel(kernel, channel_axis: int = -1):
    """``kernel`` rounded per output channel as TFLite stores int8 weights.

    Symmetric, narrow range: channel ``c`` steps by ``max|kernel[..., c]| / 127``.
    """
    moved = tf.experimental.numpy.moveaxis(kernel, channel_axis, -1)
    axes = list(range(len(moved.shape) - 1))
    bound = tf.stop_gradient(tf.maximum(tf.reduce_max(tf.abs(moved), axis=axes), 1e-8))
    flat = tf.reshape(moved, (-1, moved.shape[-1]))
    rounded = tf.quantization.fake_quant_with_min_max_vars_per_channel(
        flat, -bound, bound, num_bits=BITS, narrow_range=True)
    return tf.experimental.numpy.moveaxis(tf.reshape(rounded, moved.shape), -1, channel_axis)


@keras.saving.register_keras_serializable(package="henet_edge")
class FakeQuant(layers.Layer):
    """Rounds its input to the 256 int8 levels of ``[low, high]`` (which holds 0)."""

    def __init__(self, low: float, high: float, **kwargs):
        super().__init__(**kwargs)
        self.low, self.high = float(min(low, 0.0)), float(max(high, 0.0))

    def call(self, inputs):
        return tf.quantization.fake_quant_with_min_max_args(
            inputs, min=self.low, max=self.high, num_bits=BITS)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "low": self.low, "high": self.high}


@keras.saving.register_keras_serializable(package="henet_edge")
class FakeQuantConv2D(layers.Conv2D):
    """A ``Conv2D`` whose kernel is rounded as int8 per output channel."""

    def convolution_op(self, inputs, kernel):
        return super().convolution_op(inputs, fake_quant_kernel(kernel))


@keras.saving.register_keras_serializable(package="henet_edge")
class FakeQuantMaskedGroupConv2D(MaskedGroupConv2D):
    """A :class:`MaskedGroupConv2D` whose grouped kernel is rounded as int8 per output channel."""

    def convolution_op(self, inputs, kernel):
        return super().convolution_op(inputs, fake_quant_kernel(kernel))


@keras.saving.register_keras_serializable(package="henet_edge")
class FakeQuantDepthwiseConv2D(layers.DepthwiseConv2D):
    """A ``DepthwiseConv2D`` whose kernel is rounded as int8 per output channel."""

    def call(self, inputs):
        kh, kw, c, m = self.kernel.shape
        kernel = tf.reshape(fake_quant_kernel(tf.reshape(self.kernel, (kh, kw, c * m))),
                            (kh, kw, c, m))
        outputs = tf.nn.depthwise_conv2d(inputs, kernel, (1, *self.strides, 1),
                                         self.padding.upper(), dilations=self.dilation_rate)
        if self.use_bias:
            outputs = outputs + self.bias
        return outputs if self.activation is None else self.activation(outputs)


@keras.saving.register_keras_serializable(package="henet_edge")
class FakeQuantDense(layers.Dense):
    """A ``Dense`` whose kernel is rounded as int8 per output unit."""

    def call(self, inputs):
        outputs = tf.matmul(inputs, fake_quant_kernel(self.kernel))
        if self.use_bias:
            outputs = outputs + self.bias
        return outputs if self.activation is None else self.activation(outputs)


# Most specific first: MaskedGroupConv2D is a Conv2D.
_QUANTIZED = ((MaskedGroupConv2D, FakeQuantMaskedGroupConv2D),
              (layers.DepthwiseConv2D, FakeQuantDepthwiseConv2D),
              (layers.Conv2D, FakeQuantConv2D), (layers.Dense, FakeQuantDense))
_FAKE = (FakeQuantMaskedGroupConv2D, FakeQuantDepthwiseConv2D, FakeQuantConv2D,
         FakeQuantDense, FakeQuant)


def is_quantization_aware(model) -> bool:
    return any(isinstance(layer, _FAKE) for layer in model.layers)


def _consumers(model) -> dict[str, list]:
    """Layer name -> the layers that take its output."""
    out: dict[str, list] = {layer.name: [] for layer in model.layers}
    for layer in model.layers:
        for node in layer._inbound_nodes:
            for tensor in node.input_tensors:
                out[tensor._keras_history.operation.name].append(layer)
    return out


def _producers(layer) -> list[str]:
    return [t._keras_history.operation.name for node in layer._inbound_nodes
            for t in node.input_tensors]


def stored_tensors(model) -> list[str]:
    """The layers whose outputs the int8 model stores as tensors of their own.

    A conv's output is fused into the batch norm after it, and a batch norm's or an
    add's into the ReLU after it; value-preserving ops (reshape, transpose, shuffle)
    keep their input's tensor.
    """
    consumers = _consumers(model)
    names = []
    for layer in model.layers:
        after = consumers[layer.name]
        fused = any(isinstance(layer, producer) and after
                    and all(isinstance(c, into) for c in after)
                    for producer, into in _FUSES_INTO)
        if not fused and not isinstance(layer, _SAME_SCALE):
            names.append(layer.name)
    return names


def calibrated_ranges(model, images: Sequence[np.ndarray] | np.ndarray) -> dict[str, tuple]:
    """``{layer: (low, high)}`` for the input and every stored tensor, as TFLite calibrates.

    The min and max over ``images`` (inference mode); then an add's range taken in by
    an input only the add reads, and one range over each concat and its inputs, as
    the converter makes them.
    """
    names = stored_tensors(model)
    probe = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
    low = {n: np.inf for n in names}
    high = {n: -np.inf for n in names}
    input_name = model.inputs[0]._keras_history.operation.name
    low[input_name], high[input_name] = np.inf, -np.inf
    for batch in images if isinstance(images, (list, tuple)) else [images]:
        outputs = probe(np.asarray(batch, np.float32), training=False)
        for n, out in zip(names, outputs if len(names) > 1 else [outputs], strict=True):
            low[n], high[n] = min(low[n], float(np.min(out))), max(high[n], float(np.max(out)))
        low[input_name] = min(low[input_name], float(np.min(batch)))
        high[input_name] = max(high[input_name], float(np.max(batch)))
    _widen_single_use_add_inputs(model, low, high)
    changed = True
    while changed:  # a concat's input may itself be a concat's input elsewhere
        changed = False
        for layer in model.layers:
            if not isinstance(layer, layers.Concatenate):
                continue
            group = [layer.name, *_producers(layer)]
            lo, hi = min(low[g] for g in group), max(high[g] for g in group)
            for g in group:
                if (low[g], high[g]) != (lo, hi):
                    low[g], high[g], changed = lo, hi, True
    return {n: (min(low[n], 0.0), max(high[n], 0.0)) for n in low}


def _widen_single_use_add_inputs(model, low: dict, high: dict) -> None:
    """An add's input that nothing else reads takes in the add's output range.

    TFLite's calibrator logs that input after the add has overwritten its buffer in
    place (seen with TensorFlow 2.21: ShuffleNet's residual branch gets the range of
    the sum), so the int8 model rounds it on that wider range.
    """
    consumers = _consumers(model)
    for layer in model.layers:
        if not isinstance(layer, layers.Add):
            continue
        after = consumers[layer.name]
        out = after[0].name if layer.name not in low and len(after) == 1 else layer.name
        for name in _producers(layer):
            if name in low and out in low and [c.name for c in consumers[name]] == [layer.name]:
                low[name], high[name] = min(low[name], low[out]), max(high[name], high[out])


def quantization_aware(model, ranges: dict[str, tuple]):
    """A copy of ``model`` that rounds as its int8 TFLite model does, with its weights.

    ``ranges`` come from :func:`calibrated_ranges`. The copy has the same weights in
    the same order, so ``set_weights`` moves them either way.
    """
    input_name = model.inputs[0]._keras_history.operation.name
    quantized_input: dict[int, object] = {}  # one rounding of the input, however many read it

    def clone(layer):
        config = layer.get_config()
        for plain, fake in _QUANTIZED:
            if isinstance(layer, plain):
                return fake.from_config(config)
        return layer.__class__.from_config(config)

    def call(layer, *args, **kwargs):
        if args and _made_by(args[0], input_name):
            key = id(args[0])
            if key not in quantized_input:
                quantized_input[key] = FakeQuant(*ranges[input_name],
                                                 name=f"{input_name}_fake_quant")(args[0])
            args = (quantized_input[key], *args[1:])
        outputs = layer(*args, **kwargs)
        if layer.name not in ranges:
            return outputs
        return FakeQuant(*ranges[layer.name], name=f"{layer.name}_fake_quant")(outputs)

    copy = keras.models.clone_model(model, clone_function=clone, call_function=call)
    copy.set_weights(model.get_weights())
    return copy


def _made_by(tensor, name: str) -> bool:
    history = getattr(tensor, "_keras_history", None)
    return history is not None and history.operation.name == name
