"""The paper's ShuffleNet v1 baseline on 31x31 inputs.

ShuffleNet v1 units (Zhang et al., 2018) with bottleneck factor 2 and 3
groups, stage widths 48 / 96 / 192 at 31 / 15 / 7 pixels, ``repeat``
stride-1 units per stage. The paper does not publish the stem or the
transitions; here the stem is a 3x3 conv to 48 channels and each transition
is a ShuffleNet stride-2 unit (valid 3x3 depthwise, 3x3 average-pool
shortcut, concat), then global average pooling and the classifier.

Each stride-1 unit adds ``H*W*(C^2/3 + 4.5*C)`` MACs, so one more repeat adds
2.38 M MACs and 158.6K paper-convention parameters (groups ignored, no conv
bias), as the paper's table implies.
"""

from __future__ import annotations

import keras
from keras import layers

from .layers import ChannelShuffle, caffe_decay, conv_bn
from .registry import check_model_args

STAGE_WIDTHS = (48, 96, 192)
GROUPS = 3


def _unit(x, width, *, stride, name, **conv_kw):
    """A ShuffleNet v1 unit; stride 2 concatenates an average-pooled shortcut."""
    branch_out = width if stride == 1 else width - x.shape[-1]
    mid = branch_out // 2
    h = conv_bn(x, mid, 1, groups=GROUPS, relu=True, name=f"{name}_gpw1", **conv_kw)
    h = ChannelShuffle(GROUPS, name=f"{name}_shuffle")(h)
    h = layers.DepthwiseConv2D(
        3, strides=stride, padding="same" if stride == 1 else "valid", use_bias=False,
        depthwise_regularizer=caffe_decay(conv_kw["weight_decay"]), name=f"{name}_dw_conv")(h)
    h = layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name=f"{name}_dw_bn")(h)
    if stride == 1:
        h = conv_bn(h, branch_out, 1, groups=GROUPS, name=f"{name}_gpw2", **conv_kw)
        return layers.ReLU(name=f"{name}_relu")(layers.Add(name=f"{name}_add")([x, h]))
    # relu(concat[pool(x), h]) == concat[pool(x), relu(h)] because x >= 0 here: the ReLU
    # then fuses into the conv (XNNPACK does not delegate a standalone int8 ReLU).
    h = conv_bn(h, branch_out, 1, groups=GROUPS, relu=True, name=f"{name}_gpw2", **conv_kw)
    # 3x3 average pooling written as a frozen depthwise conv of 1/9s: the same
    # function, but XNNPACK delegates int8 depthwise convs and not int8 pooling.
    short = layers.DepthwiseConv2D(
        3, strides=2, padding="valid", use_bias=False, trainable=False,
        depthwise_initializer=keras.initializers.Constant(1 / 9), name=f"{name}_pool",
    )(x)
    return layers.Concatenate(name=f"{name}_concat")([short, h])


def build_shufflenet(
    repeat: int = 3,
    classes: int = 10,
    input_size: int = 31,
    *,
    batch_size: int | None = None,
    fast_groups: bool = False,
    weight_decay: float = 0.0,
    name: str | None = None,
) -> keras.Model:
    """Build the paper's ShuffleNet baseline (``repeat`` stride-1 units per stage)."""
    check_model_args(repeat, classes)
    if input_size < 7:
        raise ValueError(f"input size {input_size} is too small for two stride-2 units (need 7+)")
    conv_kw = {"fast_groups": fast_groups, "weight_decay": weight_decay}
    inputs = keras.Input((input_size, input_size, 3), batch_size=batch_size, name="image")
    x = conv_bn(inputs, STAGE_WIDTHS[0], 3, relu=True, name="stem", **conv_kw)
    for stage, width in enumerate(STAGE_WIDTHS, start=1):
        if stage > 1:
            x = _unit(x, width, stride=2, name=f"s{stage}down", **conv_kw)
        for block in range(1, repeat + 1):
            x = _unit(x, width, stride=1, name=f"s{stage}b{block}", **conv_kw)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    reg = caffe_decay(weight_decay)
    outputs = layers.Dense(classes, kernel_regularizer=reg, bias_regularizer=reg,
                           name="logits")(x)
    return keras.Model(inputs, outputs, name=name or f"shufflenet_r{repeat}")
