"""Training images/s of HENet with each grouped-conv formulation, measured side by side.

    python benchmarks/train_speed.py [--repeat 3] [--batch-size 128] [--steps 30]
                                     [--native-steps 4] [--rounds 3]

Formulations:
  native          Keras Conv2D(groups=g): TensorFlow's grouped-conv gradient (slow on CPU)
  masked-eigen    dense conv on block-diagonal weights built with tf.gather, with the
                  preceding channel shuffle folded into those weights, on TensorFlow's
                  Eigen kernels (TF_ENABLE_ONEDNN_OPTS=0: what TensorFlow does by default
                  on CPUs where it leaves oneDNN off, AMD ones among them)
  masked          the project's: the same with oneDNN kernels on (TF_ENABLE_ONEDNN_OPTS=1,
                  which every henet-edge command sets unless the user has set it)

Each measurement runs in a fresh process, the formulations alternating for
``--rounds`` rounds (a machine's first busy seconds are often slow, and one
process's thread pools can colour the next model's figure); the median of the
rounds is reported with the ratio to native. Synthetic batches isolate the
model step, and only steps after the warm-up are timed (tracing excluded); the
input pipeline is measured alone beside it.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import click

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from henet_edge import HenetEdgeError  # noqa: E402
from henet_edge.cli.base import script_help, user_errors  # noqa: E402

FORMULATIONS = ("native", "masked-eigen", "masked")


def measure(formulation: str, repeat: int, batch: int, steps: int, warmup: int) -> float:
    import keras
    import numpy as np
    import tensorflow as tf

    from henet_edge.henet_keras import build_henet

    model = build_henet(repeat, fast_groups=formulation != "native", weight_decay=5e-4)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 31, 31, 3)).astype("float32")
    y = np.eye(10, dtype="float32")[rng.integers(0, 10, batch)]
    data = tf.data.Dataset.from_tensors((x, y)).repeat(warmup + steps)
    ends: list[float] = []
    clock = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs=None: ends.append(time.perf_counter()))
    model.fit(data, verbose=0, callbacks=[clock])
    return steps * batch / (ends[-1] - ends[warmup - 1])


def measure_pipeline(batch: int, steps: int) -> float:
    """Images/s the input pipeline alone delivers (decoded uint8 cache -> augmented batches)."""
    import numpy as np

    from henet_edge.device.preprocess import DEFAULT
    from henet_edge.henet_keras.data import ImageSet
    from henet_edge.henet_keras.datasets import make_datasets

    rng = np.random.default_rng(0)
    n = batch * steps
    images = ImageSet(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                      rng.integers(0, 10, n).astype(np.int32), [str(i) for i in range(10)],
                      [str(i) for i in range(n)])
    train_ds, _ = make_datasets(images, images.subset(np.arange(10)), spec=DEFAULT,
                                augment="cifar", batch_size=batch, steps_per_epoch=steps,
                                first_epoch=0, last_epoch=3, seed=0, classes=10)
    iterator = iter(train_ds)
    for _ in range(steps):  # warm-up epoch
        next(iterator)
    t0 = time.perf_counter()
    for _ in range(2 * steps):
        next(iterator)
    return 2 * steps * batch / (time.perf_counter() - t0)


@click.command(help=script_help(__doc__))
@click.option("--repeat", type=click.IntRange(1), default=3, show_default=True,
              help="HENet's stride-1 blocks per stage (HENet-r3 is the default model).")
@click.option("--batch-size", type=click.IntRange(1), default=128, show_default=True,
              help="Images per training step.")
@click.option("--steps", type=click.IntRange(1), default=30, show_default=True,
              help="Timed steps of the masked formulations.")
@click.option("--native-steps", type=click.IntRange(1), default=4, show_default=True,
              help="Timed steps of the native one (about 12 s each here).")
@click.option("--warmup", type=click.IntRange(1), default=2, show_default=True,
              help="Untimed steps before the timed ones (tracing).")
@click.option("--rounds", type=click.IntRange(1), default=3, show_default=True,
              help="Rounds of every formulation, alternating; the median is reported.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--one", type=click.Choice(FORMULATIONS), default=None, hidden=True,
              help="Child process: time this formulation once and print its img/s.")
@user_errors
def main(repeat: int, batch_size: int, steps: int, native_steps: int, warmup: int,
         rounds: int, as_json: bool, one: str | None) -> None:
    if one:
        print(measure(one, repeat, batch_size, steps, warmup))
        return
    samples: dict[str, list[float]] = {f: [] for f in FORMULATIONS}
    for r in range(rounds):
        for formulation in samples:
            env = {**os.environ,
                   "TF_ENABLE_ONEDNN_OPTS": "0" if formulation == "masked-eigen" else "1"}
            out = subprocess.run(
                [sys.executable, __file__, "--one", formulation, "--repeat", str(repeat),
                 "--batch-size", str(batch_size),
                 "--steps", str(native_steps if formulation == "native" else steps),
                 "--warmup", str(warmup)], capture_output=True, text=True, env=env)
            if out.returncode != 0:
                last = (out.stderr.strip().splitlines() or [""])[-1]
                raise HenetEdgeError(f"round {r + 1}: measuring {formulation} failed "
                                     f"(exit {out.returncode}): {last}")
            samples[formulation].append(float(out.stdout.strip().splitlines()[-1]))
            if not as_json:
                print(f"round {r + 1}: {formulation:<15} {samples[formulation][-1]:8.1f} img/s",
                      flush=True)
    results = {f: statistics.median(v) for f, v in samples.items()}
    ratios = {k: v / results["native"] for k, v in results.items()}
    pipeline = measure_pipeline(batch_size, 20)
    if as_json:
        print(json.dumps({"img_per_s": results, "samples": samples, "ratio_to_native": ratios,
                          "input_pipeline_img_per_s": pipeline}, indent=1))
        return
    print(f"{'pipeline':<12} {pipeline:8.1f} img/s (input pipeline alone: decode cache, "
          "pad/crop/flip, normalise)")
    print(f"\nHENet-r{repeat}, batch {batch_size}, {steps} timed steps "
          f"({native_steps} for native) after {warmup} warm-up, median of "
          f"{rounds} rounds, {os.cpu_count()} CPU cores")
    for k, r in ratios.items():
        print(f"  {k:<15} {results[k]:8.1f} img/s  {r:6.1f}x native")


if __name__ == "__main__":
    main()
