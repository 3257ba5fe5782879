"""Where a bundle's int8 error comes from: each quantized tensor's error against float32.

    python benchmarks/int8_layer_error.py henet_edge/device/assets/default_bundle

The bundle's `.keras` weights are lowered as its manifest says and converted to int8
with its own calibration set, as `convert` does; TensorFlow Lite's quantization
debugger then runs ``--images`` of the bundle's validation images through the int8
model and its float twin, and compares every quantized tensor. An error whose spread
is near ``scale / sqrt(12)`` (about 0.29 steps) is the rounding of a well-calibrated
tensor; a tensor far above it has a range that its calibration set mis-set, and is
where a different calibration, or quantization-aware training, would pay.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import click
import numpy as np

from henet_edge import HenetEdgeError
from henet_edge.cli.base import user_errors

IDEAL = 1 / np.sqrt(12)  # the error spread, in quantization steps, of uniform rounding


@click.command()
@click.argument("bundle", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--images", type=click.IntRange(1), default=300, show_default=True,
              help="Validation images the debugger runs.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@user_errors
def main(bundle: Path, images: int, as_json: bool) -> None:
    from henet_edge.henet_keras.tf_env import prepare_tensorflow

    prepare_tensorflow()
    import keras
    import tensorflow as tf

    import henet_edge.henet_keras.layers  # noqa: F401  (registers the custom layers)
    from henet_edge.calibration.calibration_set import load_calibration
    from henet_edge.convert.lowering import lower
    from henet_edge.convert.tflite import int8_converter, one_by_one, static_batch
    from henet_edge.device.bundle import load_bundle
    from henet_edge.device.preprocess import preprocess_pixels

    loaded = load_bundle(bundle)  # every file hashed, the manifest checked
    needed = ("source/model.keras", "calibration.npz", "validation.npz")
    if missing := [name for name in needed if name not in loaded.manifest.files]:
        raise HenetEdgeError(f"{bundle}: no {', '.join(missing)} in this bundle; convert it "
                             "with --include-keras --include-calibration --include-validation N")
    model = keras.models.load_model(loaded.file("source/model.keras"), compile=False)
    graph = static_batch(lower(model, loaded.manifest.extra.get("lowering", "folded")))
    calibration = load_calibration(loaded.file("calibration.npz"))
    with np.load(loaded.file("validation.npz")) as val:
        pixels = val["pixels"][:images]
    debug_inputs = preprocess_pixels(pixels, calibration.preprocessing)
    converter = int8_converter(graph, calibration.inputs(), io="float32")
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=one_by_one(debug_inputs))
    debugger.run()
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)
    dump.seek(0)
    rows = [{"op": r["op_name"], "tensor": r["tensor_name"], "scale": float(r["scale"]),
             "error_std": float(r["stddev"]), "max_abs_error": float(r["max_abs_error"]),
             "steps": float(r["stddev"]) / float(r["scale"])}
            for r in csv.DictReader(dump) if r["op_name"] not in ("RESHAPE", "TRANSPOSE")]
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    click.echo(f"{bundle}: {len(rows)} quantized tensors, {len(debug_inputs)} validation "
               f"images; error spread in quantization steps (uniform rounding: {IDEAL:.2f})")
    for r in rows:
        click.echo(f"  {r['op']:15s} {r['tensor'].split(';')[0][-42:]:42s} "
                   f"scale {r['scale']:.4f}  error sd {r['error_std']:.4f}  "
                   f"= {r['steps']:.2f} steps")
    steps = [r["steps"] for r in rows]
    worst = max(rows, key=lambda r: r["steps"])
    click.echo(f"median {np.median(steps):.2f} steps, worst {worst['steps']:.2f} "
               f"({worst['op']} {worst['tensor'].split(';')[0]})")


if __name__ == "__main__":
    main()
