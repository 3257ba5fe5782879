"""``--init-from``: start a run from another run's weights, checked before any work."""

from __future__ import annotations

from pathlib import Path

from .run import (
    CONFIG,
    FINAL_MODEL,
    HELD_OUT_KEYS,
    Run,
    RunError,
    TrainConfig,
    held_out_differences,
)


def init_source(config: TrainConfig) -> Path:
    """The ``.keras`` file ``--init-from`` names, checked before any work.

    A run folder, or a ``.keras`` file inside one (``best.keras``), must have held
    out the same validation images (same data, seed, split and limit): otherwise its
    weights have been trained on this run's validation images.
    """
    source = Path(config.init_from)
    path = source / FINAL_MODEL if source.is_dir() else source
    if not path.is_file() and not source.is_dir():
        raise RunError(f"--init-from {source}: no such run folder or .keras file")
    if source.is_dir() and (not Run.is_run(source) or not path.is_file()):
        raise RunError(f"--init-from {source}: not a finished run folder (no {CONFIG} "
                       "and model.keras)")
    donor = source if source.is_dir() else path.parent if Run.is_run(path.parent) else None
    if donor is not None:
        keys = (*HELD_OUT_KEYS, "model", "repeat", "width_multiplier")
        differ = held_out_differences(Run.load(donor), config, keys)
        if differ:
            raise RunError(f"--init-from {source}: that run used a different "
                           + ", ".join(differ)
                           + "; its weights may have seen this run's validation images")
    return path


def init_weights(model, config: TrainConfig) -> None:
    """Start ``model`` from the weights of ``--init-from`` (a finished run or a ``.keras``)."""
    import keras

    from . import layers as _layers  # noqa: F401 - registers custom layers for loading

    path = init_source(config)
    try:
        donor = keras.models.load_model(path, compile=False)
    except Exception as exc:  # any unreadable file is the user's input
        raise RunError(f"--init-from {path}: not a Keras model ({exc})") from None
    mine, given = model.get_weights(), donor.get_weights()
    if [w.shape for w in mine] != [w.shape for w in given]:
        raise RunError(f"--init-from {path}: its architecture does not match "
                       f"{config.model} repeat {config.repeat}")
    model.set_weights(given)
