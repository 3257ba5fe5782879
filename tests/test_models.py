"""HENet / ShuffleNet builders, channel shuffle, profile counts and the profile CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from henet_edge.cli import main
from henet_edge.henet_keras import build_henet, build_shufflenet
from henet_edge.henet_keras.groups import group_pair
from henet_edge.henet_keras.profile import summarize

PAPER = {  # repeat: (params, macs, paper params, paper macs) from the spec
    2: (67_282, 7_125_576, 507_154, 7_320_264),
    3: (85_378, 10_046_040, 641_218, 10_240_728),
    4: (103_474, 12_966_504, 775_282, 13_161_192),
}


@pytest.mark.parametrize("repeat", [2, 3, 4])
def test_henet_counts_match_the_spec(repeat):
    s = summarize(build_henet(repeat))
    params, macs, paper_params, paper_macs = PAPER[repeat]
    assert s["params"] == params
    assert s["macs"] == macs
    assert s["paper_params"] == paper_params
    assert s["paper_macs"] == paper_macs
    assert round(s["macs"] / 1e6, 3) == {2: 7.126, 3: 10.046, 4: 12.967}[repeat]
    assert round(s["paper_macs"] / 1e6, 3) == {2: 7.320, 3: 10.241, 4: 13.161}[repeat]


def test_group_pairs_follow_the_papers_rule():
    assert group_pair(24) == (6, 4)
    assert group_pair(48) == (8, 6)
    assert group_pair(96) == (12, 8)
    assert group_pair(36) == (9, 4)  # a perfect square still gets m > n
    m, n = group_pair(60)
    assert m * n == 60 and m > n


def test_henet_groups_are_derived_per_block():
    model = build_henet(2)
    groups = {layer.name: layer.groups for layer in model.layers if hasattr(layer, "groups")
              and layer.name.endswith("_conv")}
    assert groups["s1b1_pw_conv"] == 6 and groups["s1b1_gc_conv"] == 4
    assert groups["s2b2_pw_conv"] == 8 and groups["s2b2_gc_conv"] == 6
    assert groups["s3b1_pw_conv"] == 12 and groups["s3b1_gc_conv"] == 8
    assert groups["s3down_gc_conv"] == 8 and groups["s3down_pw_conv"] == 6  # 192 -> 48 -> 96
    assert groups["s4down_gc_conv"] == 12 and groups["s4down_pw_conv"] == 8


def test_width_multiplier_rederives_groups():
    model = build_henet(1, width_multiplier=1.5)  # widths 36 / 72 / 144
    assert model.get_layer("s1b1_pw_conv").groups == group_pair(36)[0]
    assert model.get_layer("s2b1_gc_conv").groups == group_pair(72)[1]
    assert model.output_shape == (None, 10)


@pytest.mark.parametrize("width", [0.3, 0.45, 0.7, 1.1, 1.3, 2.6])
def test_any_width_builds_each_stage_doubling_the_last(width):
    """44 of the widths 0.25, 0.30, ... 3.00 failed in Keras: each stage was rounded on its
    own, so a stage's input (twice the stage before) no longer divided into its groups."""
    model = build_henet(1, width_multiplier=width)
    first = model.get_layer("s1b1_pw_conv").filters
    assert model.get_layer("s2b1_pw_conv").filters == 2 * first
    assert model.get_layer("s3b1_pw_conv").filters == 4 * first
    assert model.output_shape == (None, 10)


def test_relu_only_after_stem_and_second_convs():
    model = build_henet(2)
    relus = [layer.name for layer in model.layers if layer.__class__.__name__ == "ReLU"]
    assert "stem_relu" in relus
    assert all(name == "stem_relu" or name.endswith(("_gc_relu", "down_pw_relu"))
               for name in relus)
    assert not any(layer.__class__.__name__.endswith("Pooling2D") for layer in model.layers)


@pytest.mark.parametrize("repeat", [2, 3, 4])
def test_shufflenet_increment_per_repeat(repeat):
    a = summarize(build_shufflenet(repeat), conv_bias=False)
    b = summarize(build_shufflenet(repeat + 1), conv_bias=False)
    assert b["paper_params"] - a["paper_params"] == 158_592  # +158.6K
    assert b["macs"] - a["macs"] == 2_378_472  # +2.38 M


def test_channel_shuffle_matches_the_formula():
    from henet_edge.henet_keras.layers import ChannelShuffle

    g, c = 3, 12
    x = np.random.default_rng(0).standard_normal((2, 4, 5, c)).astype("float32")
    out = np.asarray(ChannelShuffle(g)(x))
    for i in range(g):
        for j in range(c // g):
            np.testing.assert_array_equal(out[..., j * g + i], x[..., i * (c // g) + j])


def test_masked_and_native_formulations_agree():
    native = build_henet(1)
    masked = build_henet(1, fast_groups=True)
    masked.set_weights(native.get_weights())
    x = np.random.default_rng(1).standard_normal((4, 31, 31, 3)).astype("float32")
    np.testing.assert_allclose(masked(x, training=False), native(x, training=False),
                               rtol=1e-4, atol=1e-4)


def test_keras_round_trip(tmp_path):
    import keras

    model = build_henet(1, batch_size=1)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(2).standard_normal((1, 31, 31, 3)).astype("float32")
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)
    assert loaded.inputs[0].shape[0] == 1


def test_profile_json():
    result = CliRunner().invoke(main, ["profile", "--repeat", "2", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert (data["params"], data["macs"], data["paper_params"], data["paper_macs"]) == PAPER[2]
    assert any(row["name"] == "logits" for row in data["layers"])


@pytest.mark.parametrize("args, message", [
    (["--model", "resnet"], "unknown model"),
    (["--repeat", "0"], "Invalid value for '--repeat'"),
    (["--input-size", "64"], "does not reduce to 1x1"),
    (["--classes", "1"], "Invalid value for '--classes'"),
])
def test_profile_bad_input_is_one_line_and_nonzero(args, message):
    proc = subprocess.run([sys.executable, "-m", "henet_edge.cli", "profile", *args],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
