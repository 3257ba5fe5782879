"""Under- or over-fitting? A run's accuracy on its own training split against validation.

Scores a run's model (its checkpoint by default) on a seeded sample of the
training split, unaugmented and preprocessed exactly as validation is, and on
the validation split, side by side:

    python benchmarks/fit_check.py training/henet-r3-long
    python benchmarks/fit_check.py training/henet-r3-long --model some/other.keras --sample 10000
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from henet_edge.cli.base import user_errors


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--model", "model_path", type=click.Path(exists=True, path_type=Path),
              default=None, help="A .keras file [the run's checkpoint.keras].")
@click.option("--sample", default=10_000, show_default=True,
              help="Training images to score (seeded sample).")
@user_errors
def main(run_dir: Path, model_path: Path | None, sample: int) -> None:
    import keras

    import henet_edge.henet_keras.layers  # noqa: F401  (registers the custom layers)
    from henet_edge.device.preprocess import preprocess_pixels
    from henet_edge.henet_keras.run import CHECKPOINT, Run, load_training_data

    run = Run.load(run_dir)
    _, train, val = load_training_data(run.train_config)
    model = keras.models.load_model(model_path or run_dir / CHECKPOINT, compile=False)
    pick = np.sort(np.random.default_rng(1).permutation(len(train))[:sample])
    for name, images in ((f"training split ({len(pick)} images, unaugmented)", train.subset(pick)),
                         (f"validation split ({len(val)} images)", val)):
        logits = model.predict(preprocess_pixels(images.images, run.preprocessing),
                               batch_size=256, verbose=0)
        print(f"{name}: top-1 {100 * np.mean(logits.argmax(1) == images.labels):.2f} %")


if __name__ == "__main__":
    main()
