"""How closely the quantization-aware copy (``train --qat``) predicts the real int8 model.

    python benchmarks/qat_check.py training/henet-r3-kd2 \\
        --calibration ../shared/data/cifar10-train-jpeg.tar.gz

Takes the run's ``best.keras`` (what ``convert`` takes) and its validation split, and
scores three models on it: the float32 Keras model; its quantization-aware copy
(:mod:`henet_edge.henet_keras.qat`), its int8 ranges calibrated on the calibration set;
and the real full-integer TFLite model that ``convert`` makes from the same set (same
sample, folded lowering), run by the device's interpreter. Prints each one's top-1
and how often each pair agrees, so a ``--qat`` run's ``val_accuracy`` (the simulated
figure) can be read against what its bundle will score.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from henet_edge.cli.base import user_errors


def _tflite_logits(model_bytes: bytes, inputs: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_bytes, num_threads=1)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    (s_in, z_in), (s_out, z_out) = inp["quantization"], out["quantization"]
    logits = []
    for x in inputs:
        interpreter.set_tensor(inp["index"], np.clip(np.round(x / s_in + z_in), -128, 127)
                               .astype(np.int8)[None])
        interpreter.invoke()
        logits.append((interpreter.get_tensor(out["index"])[0].astype(np.float32) - z_out)
                      * s_out)
    return np.array(logits)


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--calibration", required=True,
              help="Calibration source, as for `henet-edge convert --calibration`.")
@click.option("--num", type=click.IntRange(1), default=1000, show_default=True,
              help="Calibration images (the default model's bundle uses 1000).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@user_errors
def main(run_dir: Path, calibration: str, num: int, as_json: bool) -> None:
    from henet_edge.henet_keras.tf_env import prepare_tensorflow

    prepare_tensorflow()
    import keras

    import henet_edge.henet_keras.layers  # noqa: F401  (registers the custom layers)
    from henet_edge.calibration.calibration_set import resolve_calibration
    from henet_edge.convert.lowering import lower
    from henet_edge.convert.tflite import to_int8
    from henet_edge.device.preprocess import Preprocessing, preprocess_pixels
    from henet_edge.henet_keras.qat import calibrated_ranges, quantization_aware
    from henet_edge.henet_keras.run import Run, load_training_data

    run = Run.load(run_dir)
    spec = Preprocessing.from_dict(run.train_config.preprocessing)
    _, _, val = load_training_data(run.train_config)
    inputs = preprocess_pixels(val.images, spec)
    model = keras.models.load_model(run_dir / "best.keras", compile=False)
    calib = resolve_calibration(calibration, num=num, seed=0, preprocessing=spec).inputs()
    ranges = calibrated_ranges(model, [calib[i:i + 250] for i in range(0, len(calib), 250)])
    logits = {
        "float32": model.predict(inputs, batch_size=500, verbose=0),
        "simulated int8": quantization_aware(model, ranges).predict(inputs, batch_size=500,
                                                                    verbose=0),
        "TFLite int8": _tflite_logits(to_int8(lower(model, "folded"), calib), inputs),
    }
    top1 = {name: out.argmax(1) for name, out in logits.items()}
    names = list(top1)
    result = {
        "run": str(run_dir), "images": len(inputs), "calibration_images": len(calib),
        "accuracy": {n: float(np.mean(top1[n] == val.labels)) for n in names},
        "agreement": {f"{a} / {b}": float(np.mean(top1[a] == top1[b]))
                      for i, a in enumerate(names) for b in names[i + 1:]},
    }
    if as_json:
        click.echo(json.dumps(result, indent=1))
        return
    click.echo(f"{run_dir}: best.keras on {len(inputs):,} validation images, "
               f"{len(calib):,} calibration images")
    for name, acc in result["accuracy"].items():
        click.echo(f"  {name:15s} top-1 {100 * acc:.2f}%")
    for pair, agree in result["agreement"].items():
        click.echo(f"  agreement {pair:32s} {100 * agree:.2f}%")


if __name__ == "__main__":
    main()
