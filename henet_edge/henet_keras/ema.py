"""Weight averaging (EMA): the weights a run ships when it trains with ``--ema``.

The optimiser keeps an exponential moving average of every trainable weight
(Keras' ``use_ema``), updated inside the training step and saved with the
checkpoint, so a resumed run continues the same average. Training itself
follows the raw weights; the average is only read, to validate and to ship.

Batch-norm moving statistics are not trainable, and the raw weights' statistics
do not fit the averaged weights: in a warm restart whose weights move fast the
pairing scores near chance. So the averaged model gets its own statistics, the
plain mean of the per-batch statistics over a fixed sample of training images
(the ``update_bn`` step of SWA), recomputed each time the average is read.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np


def uses_average(model) -> bool:
    """Whether ``model``'s optimiser keeps a weight average."""
    optimizer = getattr(model, "optimizer", None)
    return bool(getattr(optimizer, "use_ema", False))


def _averages(model) -> dict[int, object]:
    """``id(variable) -> its moving average`` for each trainable weight."""
    optimizer = model.optimizer
    return {id(var): optimizer._model_variables_moving_average[optimizer._get_variable_index(var)]
            for var in model.trainable_variables}


def _batch_norms(model) -> list:
    import keras

    return [layer for layer in model._flatten_layers()
            if isinstance(layer, keras.layers.BatchNormalization)]


def recalibrate_batch_norm(model, batches: Sequence[np.ndarray]) -> None:
    """Set every batch norm's moving mean and variance to the mean over ``batches``.

    Each batch runs forward in training mode with the layer's momentum set so
    that the moving value becomes the running mean of the batch statistics;
    the layers' momenta are put back afterwards.
    """
    if not batches:
        raise ValueError("batch-norm recalibration needs at least one batch")
    norms = _batch_norms(model)
    momenta = [bn.momentum for bn in norms]
    try:
        for k, batch in enumerate(batches):
            for bn in norms:
                bn.momentum = k / (k + 1)  # new = old * k/(k+1) + batch / (k+1)
            model(batch, training=True)
    finally:
        for bn, momentum in zip(norms, momenta, strict=True):
            bn.momentum = momentum


@contextmanager
def averaged(model, batches: Sequence[np.ndarray] | None = None) -> Iterator[None]:
    """Inside the block the model holds its averaged weights; the raw ones come back after.

    With ``batches``, the batch-norm statistics are recomputed for the averaged
    weights (:func:`recalibrate_batch_norm`) and the raw ones restored after too.
    """
    averages = _averages(model)
    stats = ([] if batches is None else
             [v for bn in _batch_norms(model) for v in (bn.moving_mean, bn.moving_variance)])
    raw = {id(var): var.numpy() for var in [*model.trainable_variables, *stats]}
    try:
        for var in model.trainable_variables:
            var.assign(averages[id(var)])
        if batches is not None:
            recalibrate_batch_norm(model, batches)
        yield
    finally:
        for var in [*model.trainable_variables, *stats]:
            var.assign(raw[id(var)])


def shipped_weights(model, batches: Sequence[np.ndarray] | None = None) -> list:
    """``model.get_weights()``, with the average (and its recomputed statistics) when kept."""
    if not uses_average(model):
        return model.get_weights()
    with averaged(model, batches):
        return [np.array(w) for w in model.get_weights()]
