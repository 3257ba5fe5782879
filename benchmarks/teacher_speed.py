"""The teachers' labelling of one training batch: Keras forward pass against TFLite.

    python benchmarks/teacher_speed.py RUN... [--flip] [--batch 128] [--chunk 32]
                                              [--lowering folded]

``train --teacher`` labels every training batch with the teachers' mean
softmax(logits / T). This times that labelling three ways, alternating, on one
seeded batch: the Keras teachers as training used to run them (masked dense
grouped convs, oneDNN, one ``tf.function``), and :class:`TFLiteTeachers`, which
training now uses (float32 TFLite, XNNPACK, native grouped convs), once with the
whole batch in one call per teacher and view and once in chunks of ``--chunk``
images, as training runs them. ``--lowering`` adds a fourth way: the chunked
teachers converted after that graph lowering (``henet-edge convert --lowering``;
the same function, other ops). It prints each way's median ms per batch, the
speed-ups, and the largest difference between the labels.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import click
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from henet_edge.cli.base import quiet_logs, user_errors  # noqa: E402
from henet_edge.convert.lowering import LOWERINGS  # noqa: E402


@click.command()
@click.argument("run_dirs", nargs=-1, required=True,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--flip", is_flag=True, help="Each teacher also labels the mirror images.")
@click.option("--temperature", default=4.0, show_default=True)
@click.option("--batch", type=click.IntRange(1), default=128, show_default=True)
@click.option("--passes", type=click.IntRange(1), default=10, show_default=True,
              help="Timed batches per way per round (after one warm-up).")
@click.option("--rounds", type=click.IntRange(1), default=3, show_default=True)
@click.option("--chunk", type=click.IntRange(1), default=None,
              help="Images per TFLite call in the chunked way [training's, 32].")
@click.option("--lowering", type=click.Choice(LOWERINGS), default=None,
              help="Also time the chunked teachers with this lowering.")
@quiet_logs
@user_errors
def main(run_dirs: tuple[Path, ...], flip: bool, temperature: float, batch: int,
         passes: int, rounds: int, chunk: int | None, lowering: str | None) -> None:
    from henet_edge.henet_keras.tf_env import prepare_tensorflow

    prepare_tensorflow()
    import tensorflow as tf

    from henet_edge.device.environment import Probe, describe_int8_features
    from henet_edge.henet_keras.distill import load_teachers
    from henet_edge.henet_keras.run import load_runs_on_one_split
    from henet_edge.henet_keras.tflite_teachers import CHUNK, TFLiteTeachers
    from henet_edge.henet_keras.train import build_for

    runs = load_runs_on_one_split(run_dirs)
    classes = len(runs[0].labels)
    saved = load_teachers(runs, classes)
    masked = []
    for run, model in zip(runs, saved, strict=True):
        fast = build_for(run.train_config, classes, fast_groups=True)
        fast.set_weights(model.get_weights())
        masked.append(fast)

    @tf.function
    def keras_labels(images):
        views = [images, tf.reverse(images, axis=[2])] if flip else [images]
        return tf.reduce_mean(tf.stack([tf.nn.softmax(m(v, training=False) / temperature)
                                        for m in masked for v in views]), axis=0)

    chunk = chunk or CHUNK
    whole = TFLiteTeachers(saved, temperature, flip=flip, chunk=None)
    chunked = TFLiteTeachers(saved, temperature, flip=flip, chunk=chunk)
    shape = tuple(saved[0].inputs[0].shape[1:])
    x = np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)
    ways = {"keras": lambda: keras_labels(tf.constant(x)).numpy(),
            "tflite, whole batch": lambda: whole.labels(x),
            f"tflite, chunks of {chunk}": lambda: chunked.labels(x)}
    if lowering:
        from henet_edge.convert.lowering import lower

        lowered = TFLiteTeachers([lower(m, lowering) for m in saved], temperature,
                                 flip=flip, chunk=chunk)
        ways[f"tflite, chunks, {lowering}"] = lambda: lowered.labels(x)
    labels = {name: way() for name, way in ways.items()}  # warm-up (tracing, allocation)
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, way in ways.items():
            t0 = time.perf_counter()
            for _ in range(passes):
                way()
            times[name].append((time.perf_counter() - t0) / passes * 1000)
    med = {name: statistics.median(t) for name, t in times.items()}
    views = 2 if flip else 1
    probe = Probe()
    print(f"CPU: {probe.cpu()} ({describe_int8_features(probe.int8_features())})")
    print(f"{len(runs)} teachers x {views} view(s), batch {batch}, "
          f"TFLite on {whole.threads} thread(s); median of {rounds} x {passes} batches")
    for name in ways:
        print(f"  {name:22s} {med[name]:8.1f} ms/batch  (rounds: "
              + ", ".join(f"{t:.1f}" for t in times[name]) + ")")
    keras_name, whole_name, chunked_name, *lowered_name = ways
    for name in (whole_name, chunked_name):
        print(f"  {name} over keras: {med[keras_name] / med[name]:.2f}x; largest label "
              f"difference {np.abs(labels[keras_name] - labels[name]).max():.1e}")
    print(f"  chunks over whole batch: {med[whole_name] / med[chunked_name]:.2f}x; largest "
          f"label difference {np.abs(labels[whole_name] - labels[chunked_name]).max():.1e}")
    for name in lowered_name:
        print(f"  {name} over chunks: {med[chunked_name] / med[name]:.2f}x; largest label "
              f"difference {np.abs(labels[chunked_name] - labels[name]).max():.1e}")


if __name__ == "__main__":
    main()
