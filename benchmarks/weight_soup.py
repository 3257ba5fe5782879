"""Does averaging the weights of several runs beat each of them? A "model soup", scored.

Fine-tunes that start from one run stay in one basin, so the plain mean of their
weights is often a better model than any of them (Wortsman et al., 2022). This loads
each run's final weights (``model.keras``: no pick on validation), scores each on the
validation split the runs share, then their mean: once with the mean of their
batch-norm statistics and once with statistics recomputed for the mean, as ``--ema``
does (on seeded samples of the first run's training split, augmented as it trained):

    python benchmarks/weight_soup.py training/henet-r3-kd2-augcifar \\
        training/henet-r3-kd2-augflip training/henet-r3-kd2-qat training/henet-r3-kd2-t1

The runs must share the architecture and the validation split. ``--out FILE.keras``
saves the soup (with the first sample's statistics) for a closer look.
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from henet_edge import UsageError
from henet_edge.cli.base import user_errors


@click.command()
@click.argument("run_dirs", nargs=-1, required=True,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--samples", type=click.IntRange(1), default=2, show_default=True,
              help="Recompute the soup's statistics on this many samples (seeds 0, 1, ...).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Save the soup here (.keras).")
@user_errors
def main(run_dirs: tuple[Path, ...], samples: int, out: Path | None) -> None:
    if out is not None and out.suffix != ".keras":
        raise UsageError(f"--out must end in .keras (Keras saves no other format), got {out}")
    from henet_edge.henet_keras.tf_env import prepare_tensorflow

    prepare_tensorflow()
    import keras

    import henet_edge.henet_keras.layers  # noqa: F401  (registers the custom layers)
    from henet_edge.device.preprocess import preprocess_pixels
    from henet_edge.henet_keras import datasets
    from henet_edge.henet_keras.ema import recalibrate_batch_norm
    from henet_edge.henet_keras.run import (
        FINAL_MODEL,
        load_runs_on_one_split,
        load_training_data,
    )

    if len(run_dirs) < 2:
        raise click.UsageError("a soup needs at least two runs")
    runs = load_runs_on_one_split(run_dirs)
    source, train_set, val = load_training_data(runs[0].train_config)
    x_val = preprocess_pixels(val.images, runs[0].preprocessing)

    def top1(model) -> float:
        logits = model.predict(x_val, batch_size=500, verbose=0)
        return 100 * float(np.mean(np.argmax(logits, 1) == val.labels))

    models = [keras.models.load_model(run.root / FINAL_MODEL, compile=False) for run in runs]
    weights = [m.get_weights() for m in models]
    shapes = [[w.shape for w in ws] for ws in weights]
    if any(s != shapes[0] for s in shapes[1:]):
        raise click.UsageError("the runs' models differ in architecture")
    print(f"validation: {len(val)} images")
    scores = []
    for run, model in zip(runs, models, strict=True):
        scores.append(top1(model))
        print(f"  {run.root} ({FINAL_MODEL}): top-1 {scores[-1]:.2f} %", flush=True)
    print(f"members: mean {np.mean(scores):.2f} %, best {max(scores):.2f} %")
    soup = models[0]
    soup.set_weights([np.mean(ws, axis=0) for ws in zip(*weights, strict=True)])
    print(f"soup of {len(runs)}, mean of their statistics: top-1 {top1(soup):.2f} %",
          flush=True)
    for seed in reversed(range(samples)):  # seed 0 last, so --out keeps its statistics
        batches = datasets.recalibration_batches(
            train_set, runs[0].preprocessing, batch_size=128, seed=seed, augment=source.augment,
            mixup=runs[0].train_config.mixup)
        recalibrate_batch_norm(soup, batches)
        print(f"soup of {len(runs)}, statistics recomputed (sample {seed}): "
              f"top-1 {top1(soup):.2f} %", flush=True)
    if out is not None:
        soup.save(out)
        print("wrote", out)


if __name__ == "__main__":
    main()
