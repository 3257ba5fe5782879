"""Do recomputed batch-norm statistics fit a run's weights? Validation top-1, side by side.

``--ema`` gives the averaged weights their own batch-norm statistics, recomputed on a
seeded sample of augmented training images (``datasets.recalibration_batches``). This
scores a run with the statistics it trained and with recomputed ones, so a fault in
the recomputation shows as a gap between the two on the *raw* weights:

    python benchmarks/recalibration_check.py training/henet-r3-kd2 --samples 2

A run trained with ``--ema`` is read from ``checkpoint.keras`` (raw weights and the
average): raw with its own statistics, raw recomputed, average recomputed. Any other
run's shipped model: own and recomputed. ``--images`` changes the sample size, and
``--augment`` draws the sample another way than the run trained (``none``: centre crops,
as validation and the device see the images), to measure what that costs.
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from henet_edge.cli.base import user_errors
from henet_edge.henet_keras.data import AUGMENTS


@click.command()
@click.argument("run_dirs", nargs=-1, required=True,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--samples", type=click.IntRange(1), default=2, show_default=True,
              help="Recompute on this many samples (seeds 0, 1, ...), to see their spread.")
@click.option("--images", type=click.IntRange(1), default=None,
              help="Sample size (default: what --ema uses).")
@click.option("--augment", type=click.Choice(AUGMENTS), default=None,
              help="Draw the sample this way [the run's own training augmentation].")
@user_errors
def main(run_dirs: tuple[Path, ...], samples: int, images: int | None,
         augment: str | None) -> None:
    from henet_edge.henet_keras.tf_env import prepare_tensorflow

    prepare_tensorflow()
    import keras

    import henet_edge.henet_keras.distill  # (registers the distillation loss)
    import henet_edge.henet_keras.layers  # noqa: F401  (registers the custom layers)
    from henet_edge.device.preprocess import preprocess_pixels
    from henet_edge.henet_keras import datasets
    from henet_edge.henet_keras.ema import averaged, recalibrate_batch_norm, uses_average
    from henet_edge.henet_keras.run import Run, load_training_data

    if images is not None:
        datasets.RECALIBRATION_IMAGES = images
    for run_dir in run_dirs:
        run = Run.load(run_dir)
        source, train_set, val = load_training_data(run.train_config)
        x_val = preprocess_pixels(val.images, run.preprocessing)

        def top1(model) -> str:
            logits = model.predict(x_val, batch_size=500, verbose=0)  # noqa: B023
            return f"{100 * np.mean(np.argmax(logits, 1) == val.labels):.2f} %"  # noqa: B023

        ema = run.train_config.ema is not None
        path = run.root / "checkpoint.keras" if ema else run.model_path()
        model = keras.models.load_model(path, compile=ema)  # the optimiser holds the average
        drawn = augment or source.augment
        print(f"{run.root} ({path.name}, {datasets.RECALIBRATION_IMAGES} images per sample, "
              f"augmented {drawn!r})")
        print(f"  {'raw' if ema else 'shipped'} weights, own statistics: {top1(model)}")
        own = [w.numpy() for w in model.non_trainable_weights]
        for seed in range(samples):
            batches = datasets.recalibration_batches(
                train_set, run.preprocessing, batch_size=128, seed=seed,
                augment=drawn, mixup=run.train_config.mixup)
            recalibrate_batch_norm(model, batches)
            line = f"  sample {seed}: recomputed {top1(model)}"
            if ema and uses_average(model):
                with averaged(model, batches):
                    line += f"; average, recomputed {top1(model)}"
            print(line)
            for w, value in zip(model.non_trainable_weights, own, strict=True):
                w.assign(value)


if __name__ == "__main__":
    main()
