"""int8 against float32 for single convolutions, on one core with XNNPACK, side by side.

    python benchmarks/int8_kernels.py [--runs 300] [--repeats 5] [--core N] [--json]

Is int8 slow because of the network (tiny groups, shuffles, concats) or because
of the CPU's int8 kernels? Each row is one conv (+ batch norm + ReLU, fused by
the converter) converted alone to float32 and to full-integer int8 and timed
interleaved with the paper's protocol: the conv shapes HENet-r3 uses, with how
many times it uses each, and dense reference convs with large channel counts
where int8 GEMM kernels are at their best. If int8 loses even there, the CPU
has no fast int8 dot product (x86 without VNNI; an Arm core with SDOT has one).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import click

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from henet_edge.cli.base import quiet_logs, script_help, timing_options, user_errors  # noqa: E402

# (label, input HxWxC, filters, kernel, stride, groups, uses in HENet-r3)
HENET_R3 = [
    ("stem", (31, 31, 3), 24, 3, 1, 1, 1),
    ("s1 pw (first)", (31, 31, 24), 24, 1, 1, 6, 1),
    ("s1 pw", (31, 31, 48), 24, 1, 1, 6, 2),
    ("s1 gc 3x3", (31, 31, 24), 24, 3, 1, 4, 3),
    ("s1 down 3x3/2", (31, 31, 48), 24, 3, 2, 6, 1),
    ("s1 down pw", (15, 15, 24), 48, 1, 1, 4, 1),
    ("s2 pw", (15, 15, 96), 48, 1, 1, 8, 3),
    ("s2 gc 3x3", (15, 15, 48), 48, 3, 1, 6, 3),
    ("s2 down 3x3/2", (15, 15, 96), 48, 3, 2, 8, 1),
    ("s2 down pw", (7, 7, 48), 96, 1, 1, 6, 1),
    ("s3 pw", (7, 7, 192), 96, 1, 1, 12, 3),
    ("s3 gc 3x3", (7, 7, 96), 96, 3, 1, 8, 3),
]
DENSE_REFERENCE = [
    ("dense 1x1 256->256", (16, 16, 256), 256, 1, 1, 1, 0),
    ("dense 3x3 64->64", (16, 16, 64), 64, 3, 1, 1, 0),
]


def build(shape, filters, kernel, stride, groups):
    import keras

    x = inputs = keras.Input(shape, batch_size=1)
    padding = "valid" if stride == 2 else "same"
    x = keras.layers.Conv2D(filters, kernel, strides=stride, padding=padding, groups=groups,
                            use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    return keras.Model(inputs, keras.layers.ReLU()(x))


def macs(shape, filters, kernel, stride, groups) -> int:
    h, _w, c = shape
    out = h // stride if stride == 1 else (h - kernel) // stride + 1
    return out * out * filters * kernel * kernel * c // groups


@click.command(help=script_help(__doc__))
@timing_options(runs=300, each="conv and precision")
@quiet_logs
@user_errors
def main(runs: int, repeats: int, core: int | None, as_json: bool) -> None:
    import numpy as np

    from henet_edge.convert.tflite import to_float32, to_int8
    from henet_edge.device.bench import BenchOptions, run_bench

    options = BenchOptions(runs=runs, repeats=repeats, warmup=20, core=core)
    options.validate_here()  # fail before converting (run_bench checks too)
    rows = HENET_R3 + DENSE_REFERENCE
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="int8-kernels-") as tmp:
        paths = []
        for i, (_label, shape, *conv, _uses) in enumerate(rows):
            model = build(shape, *conv)
            calibration = rng.standard_normal((16, *shape)).astype("float32")
            for precision, data in (("float32", to_float32(model)),
                                    ("int8", to_int8(model, calibration))):
                path = Path(tmp) / f"{i}_{precision}.tflite"
                path.write_bytes(data)
                paths.append(path)
        run = run_bench(paths, options)
        median = {Path(r["path"]).name: r["per_inference_ms"]["median"]
                  for r in run.result["models"]}
    results = []
    for i, (label, shape, *conv, uses) in enumerate(rows):
        f32, i8 = median[f"{i}_float32.tflite"], median[f"{i}_int8.tflite"]
        n = macs(shape, *conv)
        results.append({"conv": label, "input": list(shape), "filters": conv[0],
                        "kernel": conv[1], "stride": conv[2], "groups": conv[3],
                        "in_channels_per_group": shape[2] // conv[3], "uses_in_henet_r3": uses,
                        "macs": n, "float32_us": 1000 * f32, "int8_us": 1000 * i8,
                        "int8_speedup": f32 / i8,
                        "float32_gmacs": n / f32 / 1e6, "int8_gmacs": n / i8 / 1e6})
    henet = [r for r in results if r["uses_in_henet_r3"]]
    totals = {p: sum(r[f"{p}_us"] * r["uses_in_henet_r3"] for r in henet)
              for p in ("float32", "int8")}
    cpu = run.result.get("environment", {}).get("cpu", platform.processor())
    if as_json:
        print(json.dumps({"rows": results, "henet_r3_conv_total_us": totals, "cpu": cpu,
                          "core": run.result["core"]}, indent=1))
        return
    print(f"{'conv':<20}{'input':>13}{'out':>5}{'k':>3}{'s':>3}{'g':>4}{'cin/g':>6}{'uses':>5}"
          f"{'MACs':>9}{'fp32 us':>9}{'int8 us':>9}{'int8 x':>8}{'fp32 GMAC/s':>12}"
          f"{'int8 GMAC/s':>12}")
    for r in results:
        print(f"{r['conv']:<20}{'x'.join(map(str, r['input'])):>13}{r['filters']:>5}"
              f"{r['kernel']:>3}{r['stride']:>3}{r['groups']:>4}{r['in_channels_per_group']:>6}"
              f"{r['uses_in_henet_r3'] or '-':>5}{r['macs'] / 1e3:>8.0f}K"
              f"{r['float32_us']:>9.1f}{r['int8_us']:>9.1f}{r['int8_speedup']:>7.2f}x"
              f"{r['float32_gmacs']:>12.1f}{r['int8_gmacs']:>12.1f}")
    print(f"\nHENet-r3's convs, each timed alone, times their uses: float32 "
          f"{totals['float32']:.0f} us, int8 {totals['int8']:.0f} us "
          f"(int8 {totals['float32'] / totals['int8']:.2f}x)")
    print(f"one core ({run.result['core']}) of {cpu}; median of {repeats} x {runs} "
          "passes, interleaved")


if __name__ == "__main__":
    main()
