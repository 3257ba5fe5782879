"""Which finished runs may teach a run (``train --teacher``), checked before any work.

A teacher must have held out the same validation images as the student (same
data, seed, split and limit): one trained on them would leak them into the
student. It must also see the same inputs (the same preprocessing). No
TensorFlow here; the distillation itself is :mod:`.distill`.
"""

from __future__ import annotations

from pathlib import Path

from henet_edge.device.preprocess import Preprocessing

from .run import Run, RunError, TrainConfig, held_out_differences

DEFAULT_WEIGHT = 0.9  # share of the loss given to the teachers' soft labels
DEFAULT_TEMPERATURE = 4.0


def check_teachers(config: TrainConfig) -> list[Run]:
    """The teachers of ``config`` as finished runs, refused before any work when unusable."""
    runs = []
    for given in config.teachers or ():
        source = Path(given)
        if not Run.is_run(source):
            raise RunError(f"--teacher {source}: not a run folder (no config.json)")
        run = Run.load(source)
        if not run.finished:
            raise RunError(f"--teacher {source}: the run has not finished training")
        differ = held_out_differences(run, config)
        if differ:
            raise RunError(f"--teacher {source}: that run used a different "
                           + ", ".join(differ) + "; it may have trained on this run's "
                           "validation images")
        if run.preprocessing != Preprocessing.from_dict(config.preprocessing):
            raise RunError(f"--teacher {source}: its preprocessing differs from this run's, "
                           "so it would see other inputs than the student")
        run.model_path()  # a finished run has one; a damaged one is refused here
        runs.append(run)
    return runs
