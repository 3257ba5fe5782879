"""Distillation steps with the teachers beside the student's step or in it, side by side.

    python benchmarks/distill_pipeline.py RUN [--steps 30] [--rounds 3]

``train --teacher`` labels each batch with the teachers inside the input pipeline.
Placed before the pipeline's prefetch, the teachers label the next batch while the
student trains on this one; placed after it, they label a batch when the step asks
for it, so the two take turns. Each side already uses every core (XNNPACK's threads,
TensorFlow's), so on a small CPU overlapping them may only make them share the cores
and caches. This times ``--steps`` training steps of the run's student, with the run's
teachers, loss, augmentation and mixup, each way in turn for ``--rounds`` rounds, and
prints the median ms per step of each and their ratio. Weights change as it trains
(both ways train the one model); speed does not depend on them.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from henet_edge.cli.base import quiet_logs, user_errors  # noqa: E402


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--steps", type=click.IntRange(1), default=30, show_default=True,
              help="Timed training steps per way per round.")
@click.option("--rounds", type=click.IntRange(1), default=3, show_default=True)
@quiet_logs
@user_errors
def main(run_dir: Path, steps: int, rounds: int) -> None:
    from henet_edge.henet_keras.tf_env import prepare_tensorflow

    prepare_tensorflow()
    import keras
    import tensorflow as tf

    from henet_edge.device.environment import Probe
    from henet_edge.device.preprocess import Preprocessing
    from henet_edge.henet_keras.datasets import make_datasets
    from henet_edge.henet_keras.distill import DistillationLoss
    from henet_edge.henet_keras.run import Run, RunError, load_training_data
    from henet_edge.henet_keras.teachers import check_teachers
    from henet_edge.henet_keras.train import build_for, soft_targets

    run = Run.load(run_dir)
    config, plan = run.train_config, run.config["plan"]
    if not config.teachers:
        raise RunError(f"{run_dir} was not trained with --teacher")
    source, train_set, val_set = load_training_data(config)
    classes = len(train_set.class_names)
    distill = plan["distillation"]
    teachers = soft_targets(check_teachers(config), classes, plan, print)
    plain, _ = make_datasets(
        train_set, val_set, spec=Preprocessing.from_dict(config.preprocessing),
        augment=source.augment, batch_size=plan["batch_size"],
        steps_per_epoch=plan["steps_per_epoch"], first_epoch=0, last_epoch=1,
        seed=config.seed, classes=classes, mixup=config.mixup)  # ends in a prefetch

    def labelled(x, y):
        return x, tf.concat([y, teachers(x)], axis=-1)

    ways = {"teachers beside the step": plain.map(labelled).prefetch(tf.data.AUTOTUNE),
            "teachers in the step": plain.map(labelled)}
    model = build_for(config, classes, fast_groups=True, weight_decay=plan["weight_decay"])
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True),
                  loss=DistillationLoss(classes, distill["weight"], distill["temperature"]))
    for ds in ways.values():  # warm-up: tracing, the interpreters' allocation
        model.fit(ds, steps_per_epoch=2, epochs=1, verbose=0)
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, ds in ways.items():
            t0 = time.perf_counter()
            model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
            times[name].append((time.perf_counter() - t0) / steps * 1000)
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"CPU: {Probe().cpu()}; {teachers.threads} thread(s); batch {plan['batch_size']}, "
          f"{len(config.teachers)} teachers; median of {rounds} x {steps} steps")
    for name in ways:
        print(f"  {name:26s} {med[name]:8.1f} ms/step  (rounds: "
              + ", ".join(f"{t:.1f}" for t in times[name]) + ")")
    beside, within = ways
    print(f"  in the step over beside it: {med[beside] / med[within]:.2f}x")


if __name__ == "__main__":
    main()
