"""How fast could any lowering make HENet-r3? Lower bounds beside ShuffleNet-r3, one run.

    python benchmarks/henet_bounds.py [--runs 1000] [--repeats 5] [--core N] [--json]

A lowering may reorder, fold or fuse the channel shuffles and concats, but it
must keep the function. The bounds below drop them instead, so they are *not*
HENet and their outputs mean nothing; their latency is a floor that no
lowering of those ops can beat on this runtime:

- ``no shuffles``: every remaining channel shuffle removed (grouped convs kept).
- ``no shuffles, no concats``: also each block's ``concat[X, H]`` replaced by
  ``X`` alone, so the convs after it read half the channels (fewer MACs too:
  an even lower floor).

Every model is untrained (latency does not depend on the weights), converted
to float32 and to int8 (calibrated on random inputs) and timed interleaved
with the paper's protocol on one pinned core. "MACs run" counts what the
converted graph computes (folding makes the 1x1 convs dense). If a floor is slower than
ShuffleNet-r3, no shuffle or concat lowering can make HENet-r3 the faster one.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import click

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from henet_edge import HenetEdgeError  # noqa: E402
from henet_edge.cli.base import quiet_logs, script_help, timing_options, user_errors  # noqa: E402


def _first_input_layer():
    import keras

    class FirstInput(keras.layers.Layer):
        """Returns the first of its inputs: stands in for a concat it removes."""

        def call(self, inputs):
            return inputs[0]

    return FirstInput


def bound(model, *, concats: bool):
    """``model`` rebuilt without channel shuffles (and, unless ``concats``, without concats)."""
    import keras
    from keras import layers

    from henet_edge.henet_keras.layers import ChannelShuffle

    first_input = _first_input_layer()

    def clone(layer):
        if isinstance(layer, ChannelShuffle):
            return layers.Identity(name=layer.name)
        if isinstance(layer, layers.Concatenate) and not concats:
            return first_input(name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    return keras.models.clone_model(model, clone_function=clone)


def variants():
    from henet_edge.convert.lowering import lower
    from henet_edge.henet_keras import build_model

    henet = build_model("henet", repeat=3, batch_size=1)
    shufflenet = build_model("shufflenet", repeat=3, batch_size=1)
    return [
        ("HENet-r3, grouped", henet),
        ("HENet-r3, folded (shipped)", lower(henet, "folded")),
        ("floor: no shuffles", bound(henet, concats=True)),
        ("floor: no shuffles, no concats", bound(henet, concats=False)),
        ("ShuffleNet-r3, folded", lower(shufflenet, "folded")),
    ]


@click.command(help=script_help(__doc__))
@timing_options(runs=1000, each="model")
@quiet_logs
@user_errors
def main(runs: int, repeats: int, core: int | None, as_json: bool) -> None:
    from henet_edge.device.bench import BenchOptions, run_bench

    options = BenchOptions(runs=runs, repeats=repeats, warmup=50, core=core)
    options.validate_here()  # fail before TensorFlow loads and converts (run_bench checks too)

    import numpy as np

    from henet_edge.convert.compare import convert_audited
    from henet_edge.henet_keras.profile import summarize

    calibration = np.random.default_rng(0).standard_normal((32, 31, 31, 3)).astype("float32")
    rows = []
    with tempfile.TemporaryDirectory(prefix="henet-bounds-") as tmp:
        paths = []
        for i, (label, model) in enumerate(variants()):
            try:
                files = convert_audited(model, calibration, Path(tmp) / f"variant{i}")
            except RuntimeError as exc:
                raise HenetEdgeError(f"{label}: {exc}") from None
            paths += files.values()
            rows.append({"model": label, "macs": summarize(model)["macs"], "files": files})
        run = run_bench(paths, options)
    median = {r["path"]: r["per_inference_ms"]["median"] for r in run.result["models"]}
    reference = rows[-1]
    for row in rows:
        for precision in ("float32", "int8"):
            row[f"{precision}_ms"] = median[str(row["files"][precision])]
            row[f"{precision}_vs_shufflenet"] = (row[f"{precision}_ms"]
                                                 / median[str(reference["files"][precision])])
        del row["files"]
    cpu = run.result.get("environment", {}).get("cpu", "")
    if as_json:
        print(json.dumps({"rows": rows, "core": run.result["core"], "cpu": cpu,
                          "runs": runs, "repeats": repeats}, indent=1))
        return
    print(f"{'model':<34}{'MACs run':>9}{'fp32 ms':>9}{'/ShuffleNet':>12}{'int8 ms':>9}"
          f"{'/ShuffleNet':>12}")
    for r in rows:
        print(f"{r['model']:<34}{r['macs'] / 1e6:>8.2f}M{r['float32_ms']:>9.3f}"
              f"{r['float32_vs_shufflenet']:>11.2f}x{r['int8_ms']:>9.3f}"
              f"{r['int8_vs_shufflenet']:>11.2f}x")
    print(f"\nmedian per-inference latency, {repeats} x {runs} passes interleaved on "
          f"one core ({run.result['core']}) of {cpu}; /ShuffleNet above 1.00x is slower")


if __name__ == "__main__":
    main()
