"""Keras -> TFLite with the converter called explicitly (builtins only, static batch 1).

Grouped convolutions stay native ``CONV_2D`` ops with grouped filters, which
the XNNPACK delegate runs fast in float and int8. ``SELECT_TF_OPS`` is never
enabled (the Keras ``export`` shortcut adds it silently).
"""

from __future__ import annotations

import contextlib
import io as _io
from collections.abc import Callable, Iterator

import numpy as np

IO_TYPES = ("int8", "uint8", "float32")


def static_batch(model):
    """A copy of ``model`` with a static batch of 1 and the same weights."""
    import keras

    shape = model.inputs[0].shape[1:]
    clone = keras.models.clone_model(
        model, input_tensors=keras.Input(shape, batch_size=1, name=model.inputs[0].name))
    clone.set_weights(model.get_weights())
    return clone


def _converter(model):
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_keras_model(static_batch(model))


def to_float32(model) -> bytes:
    import tensorflow as tf

    converter = _converter(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return _quiet_convert(converter)


def one_by_one(inputs: np.ndarray) -> Callable[[], Iterator[list[np.ndarray]]]:
    """A converter's representative dataset: each input as a batch of one."""
    def representative() -> Iterator[list[np.ndarray]]:
        for x in inputs:
            yield [x[None].astype(np.float32)]

    return representative


def int8_converter(model, calibration_inputs: np.ndarray, io: str = "int8"):
    """The converter :func:`to_int8` runs (per-channel conv weights, int8 activations)."""
    import tensorflow as tf

    if io not in IO_TYPES:
        raise ValueError(f"--io must be one of {', '.join(IO_TYPES)}")
    converter = _converter(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = one_by_one(calibration_inputs)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = getattr(tf, io)
    converter.inference_output_type = getattr(tf, io)
    return converter


def to_int8(model, calibration_inputs: np.ndarray, io: str = "int8") -> bytes:
    """Full-integer int8 (per-channel conv weights, int8 activations)."""
    return _quiet_convert(int8_converter(model, calibration_inputs, io))


def _quiet_convert(converter) -> bytes:
    with contextlib.redirect_stdout(_io.StringIO()):  # Keras's exporter prints its signatures
        return converter.convert()
