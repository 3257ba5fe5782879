"""Weight averaging (EMA): the weights a run ships when it trains with ``--ema``.

The optimiser keeps an exponential moving average of every trainable weight
(Keras' ``use_ema``), updated inside the training step and saved with the
checkpoint, so a resumed run continues the same average. Training itself
follows the raw weights; the average is only read, to validate and to ship.
Batch-norm moving statistics are not trainable and are taken as they are.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


def uses_average(model) -> bool:
    """Whether ``model``'s optimiser keeps a weight average."""
    optimizer = getattr(model, "optimizer", None)
    return bool(getattr(optimizer, "use_ema", False))


def _averages(model) -> dict[int, object]:
    """``id(variable) -> its moving average`` for each trainable weight."""
    optimizer = model.optimizer
    return {id(var): optimizer._model_variables_moving_average[optimizer._get_variable_index(var)]
            for var in model.trainable_variables}


def shipped_weights(model) -> list:
    """``model.get_weights()``, with each trainable weight's average in its place when kept."""
    if not uses_average(model):
        return model.get_weights()
    averages = _averages(model)
    return [averages[id(var)].numpy() if id(var) in averages else var.numpy()
            for var in model.weights]


@contextmanager
def averaged(model) -> Iterator[None]:
    """Inside the block the model holds its averaged weights; the raw ones come back after."""
    averages = _averages(model)
    raw = {id(var): var.numpy() for var in model.trainable_variables}
    try:
        for var in model.trainable_variables:
            var.assign(averages[id(var)])
        yield
    finally:
        for var in model.trainable_variables:
            var.assign(raw[id(var)])
