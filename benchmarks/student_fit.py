"""How closely a distilled student matches its teachers, on training and held-out images.

    python benchmarks/student_fit.py training/henet-r3-kd2

Takes a run trained with ``--teacher`` and scores, on a seeded sample of its own
training images (centre crops, as validation sees them) and on its validation split:
the student's top-1, the teachers' ensemble top-1 (mean softmax, with their mirror
images when the run used ``--teacher-flip``), how often the student picks the
ensemble's class, and the mean KL divergence from the ensemble to the student at the
run's distillation temperature (the term its loss minimised).

If the student matches its teachers no better on the images it trained on than on
held-out ones, it is not fitting the teachers' function even where it was shown it:
too little capacity or too little training, not overfitting. If it matches them far
better on its training images, it has learned those images, and more varied
training images (augmentation, blends) are the lever.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from henet_edge.cli.base import user_errors


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--images", type=click.IntRange(1), default=5000, show_default=True,
              help="Training images sampled (seeded); the validation split is used whole.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@user_errors
def main(run_dir: Path, images: int, as_json: bool) -> None:
    from henet_edge.henet_keras.tf_env import prepare_tensorflow

    prepare_tensorflow()
    import keras

    import henet_edge.henet_keras.layers  # noqa: F401  (registers the custom layers)
    from henet_edge.device.preprocess import preprocess_pixels
    from henet_edge.device.runtime import softmax
    from henet_edge.henet_keras.run import Run, load_training_data
    from henet_edge.henet_keras.teachers import DEFAULT_TEMPERATURE, check_teachers

    run = Run.load(run_dir)
    config = run.train_config
    if not config.teachers:
        raise click.UsageError(f"{run_dir} was not trained with --teacher")
    teachers = check_teachers(config)
    temperature = config.distill_temperature or DEFAULT_TEMPERATURE
    _, train, val = load_training_data(config)
    pick = np.random.default_rng(0).permutation(len(train))[:images]
    splits = {"training": (train.images[pick], train.labels[pick]),
              "validation": (val.images, val.labels)}
    student = keras.models.load_model(run.model_path(), compile=False)
    members = [keras.models.load_model(t.model_path(), compile=False) for t in teachers]

    def logits(model, x: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict(x, batch_size=500, verbose=0))

    result = {"run": str(run_dir), "temperature": temperature,
              "teachers": [str(t.root) for t in teachers], "flip": config.teacher_flip}
    for split, (pixels, labels) in splits.items():
        x = preprocess_pixels(pixels, run.preprocessing)
        views = [x, x[:, :, ::-1]] if config.teacher_flip else [x]
        raw = [logits(m, v) for m in members for v in views]
        ensemble = np.mean([softmax(z) for z in raw], axis=0)
        soft = np.mean([softmax(z / temperature) for z in raw], axis=0)
        mine = logits(student, x)
        kl = np.sum(soft * (np.log(soft + 1e-12) - np.log(softmax(mine / temperature) + 1e-12)),
                    axis=1)
        result[split] = {
            "images": len(x),
            "student_top1": float(np.mean(mine.argmax(1) == labels)),
            "ensemble_top1": float(np.mean(ensemble.argmax(1) == labels)),
            "agreement": float(np.mean(mine.argmax(1) == ensemble.argmax(1))),
            "kl": float(kl.mean()),
        }
    if as_json:
        click.echo(json.dumps(result, indent=1))
        return
    click.echo(f"{run_dir}: {len(teachers)} teachers"
               + (" (with mirror images)" if config.teacher_flip else "")
               + f", T = {temperature:g}")
    for split in splits:
        r = result[split]
        click.echo(f"  {split:10s} {r['images']:5d} images  student {100 * r['student_top1']:.2f}%"
                   f"  teachers {100 * r['ensemble_top1']:.2f}%  agreement "
                   f"{100 * r['agreement']:.2f}%  KL {r['kl']:.4f}")


if __name__ == "__main__":
    main()
