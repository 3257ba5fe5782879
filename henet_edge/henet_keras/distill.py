"""Knowledge distillation (``train --teacher RUN``): finished runs teach the model in training.

Each training batch's targets become ``[one-hot labels | teachers' soft labels]``:
the teachers (one or more finished run folders, averaged as an ensemble) see the
very same augmented images as the student, inside the input pipeline, at the
temperature ``T`` (run as TFLite models: :mod:`.tflite_teachers`). The loss is Hinton's:

    (1 - w) * cross-entropy(labels, student)  +  w * T^2 * KL(teachers_T || student_T)

with the recipe's label smoothing on the cross-entropy part. Validation targets
are the plain one-hot labels, so ``val_loss`` and ``val_accuracy`` mean what they
mean without a teacher. The defaults (w = 0.9, T = 4, in :mod:`.teachers`) are the
usual CIFAR settings of the KD baseline in the distillation literature; which runs
may teach is checked there too, before TensorFlow is imported.
"""

from __future__ import annotations

import functools

import keras
from keras import ops

from .run import Run, RunError
from .teachers import DEFAULT_TEMPERATURE, DEFAULT_WEIGHT


def load_teachers(runs: list[Run], classes: int) -> list[keras.Model]:
    """Each teacher's shipped weights (``best.keras``, else ``model.keras``), checked."""
    from . import layers as _layers  # noqa: F401 - registers custom layers for loading

    models = []
    for run in runs:
        saved = keras.models.load_model(run.model_path(), compile=False)
        if int(saved.outputs[0].shape[-1]) != classes:
            raise RunError(f"--teacher {run.root}: it has {saved.outputs[0].shape[-1]} "
                           f"classes, this run {classes}")
        saved.trainable = False
        models.append(saved)
    return models


@keras.saving.register_keras_serializable(package="henet_edge")
class DistillationLoss(keras.losses.Loss):
    """Hinton's loss on ``[labels | soft targets]``; plain cross-entropy on bare labels."""

    def __init__(self, classes: int, weight: float = DEFAULT_WEIGHT,
                 temperature: float = DEFAULT_TEMPERATURE, label_smoothing: float = 0.0,
                 name: str = "distillation", reduction: str = "sum_over_batch_size",
                 dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.classes, self.weight = classes, weight
        self.temperature, self.label_smoothing = temperature, label_smoothing

    def call(self, y_true, y_pred):
        labels = y_true[..., :self.classes]
        hard = keras.losses.categorical_crossentropy(
            labels, y_pred, from_logits=True, label_smoothing=self.label_smoothing)
        if y_true.shape[-1] == self.classes:  # validation: labels only
            return hard
        t = self.temperature
        soft = keras.losses.kl_divergence(y_true[..., self.classes:],
                                          ops.softmax(y_pred / t)) * (t * t)
        return (1.0 - self.weight) * hard + self.weight * soft

    def get_config(self) -> dict:
        return {**super().get_config(), "classes": self.classes, "weight": self.weight,
                "temperature": self.temperature, "label_smoothing": self.label_smoothing}


def _label_accuracy(y_true, y_pred, classes: int, k: int):
    labels = y_true[..., :classes]
    if k == 1:
        return keras.metrics.categorical_accuracy(labels, y_pred)
    return keras.metrics.top_k_categorical_accuracy(labels, y_pred, k=k)


@keras.saving.register_keras_serializable(package="henet_edge")
class LabelAccuracy(keras.metrics.MeanMetricWrapper):
    """Top-k accuracy on the label part of the targets (the teachers' part is ignored)."""

    def __init__(self, classes: int, k: int = 1, name: str = "accuracy", dtype=None):
        super().__init__(fn=functools.partial(_label_accuracy, classes=classes, k=k),
                         name=name, dtype=dtype)
        self.classes, self.k = classes, k

    def get_config(self) -> dict:
        return {"classes": self.classes, "k": self.k, "name": self.name, "dtype": self.dtype}
