"""How good a teacher would these runs make? Each run's and their ensemble's validation top-1.

Scores each run's shipped model (``best.keras``, else ``model.keras``) on the
validation split the runs share, then the ensemble that ``train --teacher`` would
distil from (the mean of the members' softmax), and prints how often the members
agree. The runs must have held out the same validation images:

    python benchmarks/ensemble_check.py training/henet-r3-long \\
        training/equal-budget/henet-r4 training/equal-budget/shufflenet-r5

``--flip`` scores each member on every image and its mirror image (the mean of the
two softmaxes), as a teacher could label with ``train --teacher-flip``.

``--best-of K`` also lists the best K-member sub-ensemble. That choice is made on the
validation split, so its figure is an optimistic ceiling, not a held-out result.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import click
import numpy as np

from henet_edge.cli.base import user_errors


@click.command()
@click.argument("run_dirs", nargs=-1, required=True,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--temperature", default=1.0, show_default=True,
              help="Average softmax(logits / T) (train --teacher averages at its own T).")
@click.option("--best-of", "best_of", type=click.IntRange(1), default=None, metavar="K",
              help="Also find the K runs whose ensemble scores best (picked on validation).")
@click.option("--flip", is_flag=True,
              help="Each member averages the image and its mirror image (test-time flip).")
@user_errors
def main(run_dirs: tuple[Path, ...], temperature: float, best_of: int | None,
         flip: bool) -> None:
    from henet_edge.henet_keras.tf_env import prepare_tensorflow

    prepare_tensorflow()
    import keras

    import henet_edge.henet_keras.layers  # noqa: F401  (registers the custom layers)
    from henet_edge.device.preprocess import preprocess_pixels
    from henet_edge.device.runtime import softmax
    from henet_edge.henet_keras.run import load_runs_on_one_split

    runs = load_runs_on_one_split(run_dirs)
    val, note = runs[0].validation()
    print(f"validation: {note}, {len(val)} images")
    probs = []
    for run in runs:
        model = keras.models.load_model(run.model_path(), compile=False)
        x = preprocess_pixels(val.images, run.preprocessing)
        views = [x, x[:, :, ::-1]] if flip else [x]
        probs.append(np.mean([softmax(np.asarray(model.predict(v, batch_size=500, verbose=0))
                                      / temperature) for v in views], axis=0))
        print(f"  {run.root}: top-1 {100 * np.mean(probs[-1].argmax(1) == val.labels):.2f} %")
    votes = np.stack([p.argmax(1) for p in probs])
    agree = np.mean((votes == votes[0]).all(axis=0))
    ensemble = np.mean(probs, axis=0).argmax(1)
    print(f"ensemble of {len(runs)} (mean softmax at T={temperature:g}): "
          f"top-1 {100 * np.mean(ensemble == val.labels):.2f} %; "
          f"all members agree on {100 * agree:.1f} % of the images")
    if best_of is not None and best_of <= len(runs):
        def top1(members: tuple[int, ...]) -> float:
            return float(np.mean(np.mean([probs[i] for i in members], axis=0).argmax(1)
                                 == val.labels))

        choices = list(itertools.combinations(range(len(runs)), best_of))
        best = max(choices, key=top1)
        print(f"best {best_of} of {len(runs)} ({len(choices)} choices, picked on validation): "
              f"top-1 {100 * top1(best):.2f} %: " + ", ".join(str(runs[i].root) for i in best))


if __name__ == "__main__":
    main()
