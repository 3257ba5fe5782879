"""Lowerings compute the same function; `compare` times them side by side."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from henet_edge.cli import main
from henet_edge.convert.lowering import Lowering, dense_kernel, lower, shuffle_source
from henet_edge.henet_keras import build_model
from henet_edge.henet_keras.layers import ChannelShuffle


def test_shuffle_source_is_the_channel_shuffle():
    x = np.arange(24, dtype="float32").reshape(1, 1, 1, 24)
    shuffled = np.asarray(ChannelShuffle(6)(x))[0, 0, 0]
    np.testing.assert_array_equal(shuffled, x[0, 0, 0, shuffle_source(24, 6)])


def test_dense_kernel_is_block_diagonal_and_computes_the_grouped_conv():
    import keras

    grouped = keras.layers.Conv2D(8, 3, groups=4, use_bias=False, padding="same")
    dense = keras.layers.Conv2D(8, 3, use_bias=False, padding="same")
    x = np.random.default_rng(0).standard_normal((2, 5, 5, 12)).astype("float32")
    grouped.build(x.shape)
    dense.build(x.shape)
    kernel = dense_kernel(grouped.get_weights()[0], 4)
    assert kernel.shape == (3, 3, 12, 8)
    assert not kernel[:, :, :3, 2:].any()  # off-diagonal blocks are zero
    dense.set_weights([kernel])
    np.testing.assert_allclose(dense(x), grouped(x), rtol=1e-5, atol=1e-5)


def _with_random_batch_norm(model):
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32")
                               for w in layer.get_weights()])
    return model


@pytest.mark.parametrize("family", ["henet", "shufflenet"])
@pytest.mark.parametrize("lowering", ["folded", "folded-all", "dense"])
def test_lowering_keeps_the_function_and_removes_shuffles(family, lowering):
    model = _with_random_batch_norm(build_model(family, repeat=1))
    lowered = lower(model, lowering)
    shuffles = [layer for layer in model.layers if isinstance(layer, ChannelShuffle)]
    left = [layer for layer in lowered.layers if isinstance(layer, ChannelShuffle)]
    full_res = [s for s in shuffles if s.input.shape[2] == 31]
    assert full_res and len(left) <= len(shuffles) - len(full_res)
    x = np.random.default_rng(0).standard_normal((3, 31, 31, 3)).astype("float32")
    want = np.asarray(model(x, training=False))
    got = np.asarray(lowered(x, training=False))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("family", ["henet", "shufflenet"])
def test_dense_lowering_leaves_no_grouped_conv_and_no_shuffle(family):
    import keras

    model = build_model(family, repeat=1)
    grouped = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)
               and layer.groups > 1]
    assert grouped  # the model has grouped convs to lower
    lowered = lower(model, "dense")
    assert not [layer for layer in lowered.layers if isinstance(layer, ChannelShuffle)]
    assert not [layer for layer in lowered.layers if isinstance(layer, keras.layers.Conv2D)
                and layer.groups > 1]


def test_grouped_lowering_is_the_model_itself():
    model = build_model("henet", repeat=1)
    assert lower(model, "grouped") is model
    with pytest.raises(ValueError, match="unknown lowering"):
        Lowering.parse("fused")


def test_compare_times_lowerings_side_by_side(tmp_path):
    plot = tmp_path / "compare.png"
    result = CliRunner().invoke(main, [
        "compare", "--models", "henet:1;shufflenet:1", "--runs", "3", "--repeats", "1",
        "--warmup", "1", "--lowering", "grouped,folded", "--plot", str(plot), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [(r["model"], r["lowering"]) for r in data["rows"]] == [
        ("henet-r1", "grouped"), ("henet-r1", "folded"),
        ("shufflenet-r1", "grouped"), ("shufflenet-r1", "folded")]
    for row in data["rows"]:
        for precision in ("float32", "int8"):
            assert row[precision]["median_ms"] > 0
            assert row[precision]["delegate_nodes"] >= 1
    speedups = data["lowering_speedups"]
    assert {(s["model"], s["lowering"], s["reference"]) for s in speedups} == {
        ("henet-r1", "folded", "grouped"), ("shufflenet-r1", "folded", "grouped")}
    ratios = {(r["model"], r["lowering"]): r for r in data["ratios"]}
    assert "henet_over_shufflenet_int8" in ratios[("henet-r1", "folded")]
    assert plot.stat().st_size > 1000


def test_compare_refuses_an_unknown_lowering():
    result = CliRunner().invoke(main, ["compare", "--models", "henet:1", "--lowering",
                                       "grouped,fused"])
    assert result.exit_code != 0
    assert "--lowering" in result.output and "fused" in result.output


def test_the_compare_plot_draws_every_lowering_timed(tmp_path, monkeypatch):
    """Four lowerings side by side: four lines per family and panel, none dropped."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.axes import Axes

    from henet_edge.convert.compare import LOWERINGS, plot

    drawn: list[str] = []
    real_plot = Axes.plot
    monkeypatch.setattr(Axes, "plot", lambda self, *a, **k: (drawn.append(k.get("label")),
                                                              real_plot(self, *a, **k))[1])
    rows = [{"family": "henet", "repeat": r, "lowering": lowering, "macs": 1e6 * r,
             "float32": {"median_ms": 1.0 * r}, "int8": {"median_ms": 0.5 * r}}
            for lowering in LOWERINGS for r in (2, 3)]
    plot({"lowerings": list(LOWERINGS), "rows": rows}, tmp_path / "compare.png")
    assert sorted(drawn) == sorted(f"henet ({lowering})" for lowering in LOWERINGS
                                   for _panel in ("float32", "int8"))
    assert (tmp_path / "compare.png").stat().st_size > 0
