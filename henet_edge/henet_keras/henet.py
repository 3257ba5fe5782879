"""HENet (Zhu and Zhang, 2018), exactly as in the authors' Caffe deploy files.

Every conv is followed by batch norm; ReLU follows only the stem conv and the
second conv of each block. A stride-1 block computes
``H = relu(bn(gconv3x3_n(shuffle_m(bn(gconv1x1_m(x))))))``, adds ``H`` to the
stage's running sum ``X`` and emits ``concat[X, H]``. A stride-2 block is
``gconv3x3_m (stride 2, valid) -> shuffle_m -> gconv1x1_n -> ReLU``.
"""

from __future__ import annotations

import keras
from keras import layers

from .groups import check_input_size, group_pair, scaled_width
from .layers import caffe_decay, conv_bn
from .registry import check_model_args

STAGE_WIDTHS = (24, 48, 96)


def _stride1_block(x, running_sum, width, *, name, **conv_kw):
    m, n = group_pair(width)
    h = conv_bn(x, width, 1, groups=m, name=f"{name}_pw", **conv_kw)
    h = conv_bn(h, width, 3, groups=n, relu=True, shuffle_before=m, name=f"{name}_gc",
                **conv_kw)
    running_sum = layers.Add(name=f"{name}_add")([running_sum, h])
    out = layers.Concatenate(name=f"{name}_concat")([running_sum, h])
    return out, running_sum


def _stride2_block(x, mid, out, *, name, **conv_kw):
    m, n = group_pair(mid)
    h = conv_bn(x, mid, 3, strides=2, padding="valid", groups=m, name=f"{name}_gc", **conv_kw)
    return conv_bn(h, out, 1, groups=n, relu=True, shuffle_before=m, name=f"{name}_pw",
                   **conv_kw)


def build_henet(
    repeat: int = 3,
    classes: int = 10,
    input_size: int = 31,
    width_multiplier: float = 1.0,
    *,
    batch_size: int | None = None,
    fast_groups: bool = False,
    weight_decay: float = 0.0,
    name: str | None = None,
) -> keras.Model:
    """Build HENet.

    Args:
        repeat: stride-1 blocks per stage (the paper uses 2, 3 and 4).
        classes: output classes (logits; no softmax).
        input_size: square input side; must reduce to 1x1 (31 in the paper).
        width_multiplier: scales the first stage's width (24); each later stage doubles
            the one before, and groups are re-derived per block.
        batch_size: a static batch (1 for TFLite export) or None.
        fast_groups: compute grouped convs as masked dense convs (fast CPU
            training); the weights are identical in shape to the native form.
        weight_decay: Caffe-style decay, applied as ``L2(weight_decay / 2)``.
    """
    check_model_args(repeat, classes)
    check_input_size(input_size)
    conv_kw = {"fast_groups": fast_groups, "weight_decay": weight_decay}
    # Each stage doubles the last (24, 48, 96): only the first is scaled, so that every
    # stage's input (the block before's 2x output) has the width its groups divide.
    first = scaled_width(STAGE_WIDTHS[0], width_multiplier)
    widths = [first * STAGE_WIDTHS[i] // STAGE_WIDTHS[0] for i in range(len(STAGE_WIDTHS))]

    inputs = keras.Input((input_size, input_size, 3), batch_size=batch_size, name="image")
    x = conv_bn(inputs, widths[0], 3, relu=True, name="stem", **conv_kw)
    for stage, width in enumerate(widths, start=1):
        running_sum = x
        for block in range(1, repeat + 1):
            x, running_sum = _stride1_block(
                x, running_sum, width, name=f"s{stage}b{block}", **conv_kw
            )
        # Stage 3's transition narrows to widths[1] before widening to widths[2].
        mid = width if stage < 3 else widths[1]
        out = 2 * width if stage < 3 else widths[2]
        x = _stride2_block(x, mid, out, name=f"s{stage}down", **conv_kw)
    x = _stride2_block(x, widths[2], 2 * widths[2], name="s4down", **conv_kw)
    x = layers.Flatten(name="flatten")(x)
    reg = caffe_decay(weight_decay)
    outputs = layers.Dense(
        classes, kernel_regularizer=reg, bias_regularizer=reg, name="logits"
    )(x)
    return keras.Model(inputs, outputs, name=name or f"henet_r{repeat}")
