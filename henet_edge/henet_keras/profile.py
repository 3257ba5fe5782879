"""Per-layer parameter and MAC counts, real and in the HENet paper's convention.

Real counts: trainable parameters of the model as built (grouped kernels, no
conv bias, BN gamma and beta, FC) and multiply-accumulates of every conv and
dense layer.

The paper's convention (reproduces its Table 3 to the unit): every conv
counted as if dense (groups ignored), plus a conv bias and two batch-norm
values per output channel, plus the FC layer; MACs respect groups, but the
first block of each stage is counted as if it took 2C inputs (as every later
block does). ``conv_bias=False`` drops the bias term (used for the ShuffleNet
baseline, whose increments match only without it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import keras

from henet_edge import HenetEdgeError


class ProfileError(HenetEdgeError):
    """A model with weights the profile does not know how to count."""


@dataclass
class LayerProfile:
    name: str
    kind: str
    output_shape: tuple[int, ...]
    groups: int
    params: int
    macs: int
    paper_params: int
    paper_macs: int


def _is_first_block_pw(layer_name: str) -> bool:
    return layer_name.endswith("b1_pw_conv")


def profile_model(model: keras.Model, *, conv_bias: bool = True) -> list[LayerProfile]:
    """Profile every conv, BN and dense layer of ``model``."""
    rows: list[LayerProfile] = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            if not layer.trainable:  # a frozen average pool written as a conv
                continue
            kh, kw = layer.kernel_size
            _, h, w, c = layer.output.shape
            params = kh * kw * c
            rows.append(LayerProfile(layer.name, f"depthwise {kh}x{kw}/{layer.strides[0]}",
                                     (h, w, c), c, params, h * w * params,
                                     kh * kw * c * c + (c if conv_bias else 0), h * w * params))
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw = layer.kernel_size
            c_in = layer.input.shape[-1]
            _, h, w, c_out = layer.output.shape
            g = layer.groups
            params = kh * kw * (c_in // g) * c_out + (c_out if layer.use_bias else 0)
            macs = h * w * kh * kw * (c_in // g) * c_out
            paper_in = 2 * c_in if _is_first_block_pw(layer.name) else c_in
            paper_macs = h * w * kh * kw * (paper_in // g) * c_out
            paper_params = kh * kw * c_in * c_out + (c_out if conv_bias else 0)
            kind = "depthwise" if g == c_in == c_out else ("gconv" if g > 1 else "conv")
            rows.append(LayerProfile(layer.name, f"{kind} {kh}x{kw}/{layer.strides[0]}",
                                     (h, w, c_out), g, params, macs, paper_params, paper_macs))
        elif isinstance(layer, keras.layers.BatchNormalization):
            c = layer.output.shape[-1]
            n = 2 * c
            rows.append(LayerProfile(layer.name, "batchnorm", tuple(layer.output.shape[1:]),
                                     1, n, 0, n, 0))
        elif isinstance(layer, keras.layers.Dense):
            c_in, c_out = layer.input.shape[-1], layer.units
            n = c_in * c_out + c_out
            rows.append(LayerProfile(layer.name, "dense", (c_out,), 1, n, c_in * c_out,
                                     n, c_in * c_out))
    return rows


def summarize(model: keras.Model, *, conv_bias: bool = True) -> dict:
    """Totals and per-layer rows as a JSON-ready dict."""
    rows = profile_model(model, conv_bias=conv_bias)
    trainable = sum(int(w.numpy().size) for w in model.trainable_weights)
    totals = {k: sum(getattr(r, k) for r in rows)
              for k in ("params", "macs", "paper_params", "paper_macs")}
    if totals["params"] != trainable:  # every trainable weight must be accounted for
        counted = {r.name for r in rows}
        other = sorted({type(layer).__name__ for layer in model.layers
                        if layer.trainable_weights and layer.name not in counted})
        raise ProfileError(f"{model.name}: profile counted {totals['params']:,} of its "
                           f"{trainable:,} trainable params; layers it cannot count: "
                           f"{', '.join(other) or 'none found'}. Profile counts Conv2D, "
                           "DepthwiseConv2D, BatchNormalization and Dense only")
    return {"model": model.name, **totals, "layers": [asdict(r) for r in rows]}


def profile_family(name: str, *, repeat: int, classes: int, input_size: int,
                   width_multiplier: float = 1.0) -> dict:
    """Build a registered model and :func:`summarize` it with its family's counting rule."""
    from .registry import model_spec

    spec = model_spec(name)
    try:  # build refuses a width for a family without one
        model = spec.build(repeat=repeat, classes=classes, input_size=input_size,
                           width_multiplier=width_multiplier)
    except ValueError as exc:
        if isinstance(exc, HenetEdgeError):
            raise
        raise ProfileError(str(exc)) from None
    return summarize(model, conv_bias=spec.conv_bias)


def format_profile(summary: dict, *, show_layers: bool = True) -> str:
    """The per-layer table (optional) and both totals, each saying what it counts."""
    lines = []
    if show_layers:
        lines.append(f"{'layer':<18}{'kind':<16}{'output':>12}{'g':>4}{'params':>9}"
                     f"{'MACs':>11}{'paper params':>14}{'paper MACs':>12}")
        for row in summary["layers"]:
            shape = "x".join(str(d) for d in row["output_shape"])
            lines.append(f"{row['name']:<18}{row['kind']:<16}{shape:>12}{row['groups']:>4}"
                         f"{row['params']:>9,}{row['macs']:>11,}{row['paper_params']:>14,}"
                         f"{row['paper_macs']:>12,}")
        lines.append("")
    pad = " " * len(summary["model"])
    lines += [
        f"{summary['model']}: {summary['params']:,} trainable params, "
        f"{summary['macs'] / 1e6:.3f} M MACs (real; batch-norm moving statistics, which "
        "`train` adds to its weight count, are not params)",
        f"{pad}  {summary['paper_params']:,} params, {summary['paper_macs'] / 1e6:.3f} M MACs "
        "(paper convention)",
        "The paper's columns count convs as dense with a bias, so they overstate what a "
        "grouped model stores."]
    return "\n".join(lines)
