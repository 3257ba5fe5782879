"""The teachers of ``train --teacher`` as float32 TFLite models: the same labels, sooner.

Distillation spends most of an epoch in the teachers' forward passes (eight a batch
for four teachers with ``--teacher-flip``). XNNPACK runs those passes faster than
TensorFlow's Keras forward pass on a CPU, and their outputs agree to float32
rounding. So each teacher is converted once, at the start of training, to a float32
TFLite model with its native grouped convs, and labels the input pipeline's batches
through ``tf.numpy_function``; the student still trains in TensorFlow.

A batch goes through in chunks of :data:`CHUNK` images: a whole training batch's
activations (128 images at 31 x 31 x 48 channels is 23 MB a tensor) overflow the
caches, and chunks of 16 to 32 ran about 1.7x faster on a 2-core AMD EPYC, with the
same labels to the last bit (``benchmarks/teacher_speed.py`` times both).
"""

from __future__ import annotations

import contextlib
import io
import os
import threading

import numpy as np

from henet_edge.device.runtime import find_runtime, softmax, without_delegate_banner

CHUNK = 32  # images per interpreter call


def to_tflite(model) -> bytes:
    """``model`` (any batch size) as a float32 TFLite flatbuffer of builtin ops only."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    with contextlib.redirect_stdout(io.StringIO()):  # Keras's exporter prints its signatures
        return converter.convert()


class TFLiteTeachers:
    """``images -> mean of the teachers' softmax(logits / T)``, for the input pipeline.

    With ``flip`` each teacher also labels the mirror image of each image (NHWC), and
    the mean runs over both views: a flip-averaged teacher, usually a better one.
    ``models`` are the teachers as Keras models; ``threads`` is XNNPACK's (default:
    every core); ``chunk`` is how many images each interpreter call takes (``None``:
    the whole batch).
    """

    def __init__(self, models: list, temperature: float, flip: bool = False,
                 threads: int | None = None, chunk: int | None = CHUNK):
        self.temperature, self.flip, self.chunk = temperature, flip, chunk
        self.threads = threads or os.cpu_count() or 1
        self.classes = int(models[0].outputs[0].shape[-1])
        module = find_runtime().module
        with without_delegate_banner():
            self._interpreters = [module.Interpreter(model_content=to_tflite(m),
                                                     num_threads=self.threads)
                                  for m in models]
        self._io = [(i.get_input_details()[0]["index"], i.get_output_details()[0]["index"])
                    for i in self._interpreters]  # each model's one input and output tensor
        self._batch = [None] * len(models)
        self._lock = threading.Lock()  # an interpreter runs one call at a time

    def _logits(self, i: int, images: np.ndarray) -> np.ndarray:
        step = self.chunk or len(images)
        if len(images) <= step:
            return self._invoke(i, images)
        return np.concatenate([self._invoke(i, images[start:start + step])
                               for start in range(0, len(images), step)])

    def _invoke(self, i: int, images: np.ndarray) -> np.ndarray:
        interpreter, (source, result) = self._interpreters[i], self._io[i]
        if self._batch[i] != images.shape:
            interpreter.resize_tensor_input(source, images.shape)
            with without_delegate_banner():
                interpreter.allocate_tensors()
            self._batch[i] = images.shape
        interpreter.set_tensor(source, images)
        interpreter.invoke()
        return interpreter.get_tensor(result)  # a copy

    def labels(self, images: np.ndarray) -> np.ndarray:
        """The soft labels of a batch of model-ready images, in NumPy."""
        images = np.asarray(images, np.float32)
        views = [images, np.ascontiguousarray(images[:, :, ::-1])] if self.flip else [images]
        with self._lock:
            probs = [softmax(self._logits(i, v) / self.temperature)
                     for i in range(len(self._interpreters)) for v in views]
        return np.mean(probs, axis=0).astype(np.float32)

    def __call__(self, images):
        """The same, as a TensorFlow op (inside a ``tf.data`` map)."""
        import tensorflow as tf

        targets = tf.numpy_function(self.labels, [images], tf.float32, stateful=False)
        targets.set_shape((images.shape[0], self.classes))
        return targets
