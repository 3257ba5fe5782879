"""Keras layers shared by the HENet and ShuffleNet builders."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from . import schedule as _schedule  # noqa: F401 - registered, so checkpoints load


@keras.saving.register_keras_serializable(package="henet_edge")
class ChannelShuffle(layers.Layer):
    """Channel shuffle with ``groups`` groups: ``out[j*g + i] = in[i*(C/g) + j]``.

    Implemented as reshape ``(H, W, g, C/g)`` -> transpose -> reshape, with
    constant shapes only, so a static-batch export has no dynamic-shape ops.
    """

    def __init__(self, groups: int, **kwargs):
        super().__init__(**kwargs)
        self.groups = int(groups)

    def call(self, inputs):
        _, h, w, c = inputs.shape
        if c % self.groups:
            raise ValueError(f"{c} channels do not split into {self.groups} groups")
        x = ops.reshape(inputs, (-1, h, w, self.groups, c // self.groups))
        x = ops.transpose(x, (0, 1, 2, 4, 3))
        return ops.reshape(x, (-1, h, w, c))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}


def block_diagonal_mask(kernel_shape: tuple[int, ...], groups: int) -> np.ndarray:
    """0/1 mask selecting the grouped blocks of a dense ``(kh, kw, C_in, C_out)`` kernel."""
    kh, kw, c_in, c_out = kernel_shape
    in_group = np.arange(c_in) // (c_in // groups)
    out_group = np.arange(c_out) // (c_out // groups)
    mask = (in_group[:, None] == out_group[None, :]).astype("float32")
    return np.broadcast_to(mask, (kh, kw, c_in, c_out)).copy()


@keras.saving.register_keras_serializable(package="henet_edge")
class MaskedGroupConv2D(layers.Conv2D):
    """A grouped ``Conv2D`` computed as a dense conv on block-diagonal weights.

    Its variables have exactly the native grouped shape ``(kh, kw, C_in/g, C_out)``,
    so weights move to and from ``Conv2D(groups=g)`` unchanged. On a CPU its
    forward and backward passes are dense convolutions, which TensorFlow runs
    tens of times faster than its grouped-convolution gradient.
    """

    def __init__(self, *args, input_shuffle: int = 1, **kwargs):
        super().__init__(*args, **kwargs)
        self.input_shuffle = int(input_shuffle)

    def build(self, input_shape):
        super().build(input_shape)
        c_in = input_shape[-1]
        kh, kw = self.kernel_size
        mask = block_diagonal_mask((kh, kw, c_in, self.filters), self.groups)
        tiles = np.arange(c_in) % (c_in // self.groups)
        if self.input_shuffle > 1:
            # conv(shuffle(x), D) == conv(x, D') with D's input channels un-shuffled:
            # the channel shuffle before this conv costs nothing in training.
            g, n = self.input_shuffle, c_in // self.input_shuffle
            source = np.array([(k % g) * n + k // g for k in range(c_in)])
            inverse = np.argsort(source)
            mask, tiles = mask[:, :, inverse, :], tiles[inverse]
        self._mask = ops.convert_to_tensor(mask)
        self._tiles = ops.convert_to_tensor(tiles, "int32")

    def get_config(self):
        return {**super().get_config(), "input_shuffle": self.input_shuffle}

    def convolution_op(self, inputs, kernel):
        if self.groups > 1 or self.input_shuffle > 1:
            # Repeat the grouped kernel along C_in and keep the diagonal blocks.
            # (tf.gather trains twice as fast here as tile or keras.ops.take,
            # whose gradients TensorFlow runs slowly on CPU.)
            kernel = tf.gather(kernel, self._tiles, axis=2) * self._mask
        # tf.nn.conv2d directly: keras.ops.conv takes a slower path on CPU here.
        return tf.nn.conv2d(inputs, kernel, strides=self.strides[0],
                            padding=self.padding.upper())


def caffe_decay(weight_decay: float):
    """Caffe's weight decay as a Keras regularizer: ``L2(weight_decay / 2)``, or None."""
    return keras.regularizers.L2(weight_decay / 2) if weight_decay else None


def conv_bn(
    x,
    filters: int,
    kernel_size: int,
    *,
    strides: int = 1,
    padding: str = "same",
    groups: int = 1,
    relu: bool = False,
    fast_groups: bool = False,
    weight_decay: float = 0.0,
    shuffle_before: int = 1,
    name: str,
):
    """[ChannelShuffle ->] Conv (no bias) -> BatchNorm [-> ReLU].

    Grouped natively, or (``fast_groups``) as a masked dense conv into whose
    weights the preceding channel shuffle is folded.
    """
    reg = caffe_decay(weight_decay)
    extra = {}
    if fast_groups and (groups > 1 or shuffle_before > 1):
        conv_cls, extra = MaskedGroupConv2D, {"input_shuffle": shuffle_before}
    else:
        conv_cls = layers.Conv2D
        if shuffle_before > 1:
            x = ChannelShuffle(shuffle_before, name=f"{name}_shuffle")(x)
    x = conv_cls(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        groups=groups,
        use_bias=False,
        kernel_initializer="he_normal",
        kernel_regularizer=reg,
        name=f"{name}_conv",
        **extra,
    )(x)
    bn_reg = caffe_decay(weight_decay)
    x = layers.BatchNormalization(
        epsilon=1e-5, momentum=0.9, gamma_regularizer=bn_reg, beta_regularizer=bn_reg,
        name=f"{name}_bn",
    )(x)
    if relu:
        x = layers.ReLU(name=f"{name}_relu")(x)
    return x
