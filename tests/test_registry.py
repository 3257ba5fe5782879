"""The model registry: one ModelSpec per family, used by every place that needs a fact."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import pytest

from henet_edge.henet_keras import build_model, model_names, model_spec
from henet_edge.henet_keras.profile import summarize
from henet_edge.henet_keras.registry import (
    ModelArgumentError,
    ModelSpec,
    UnknownModelError,
    detect_family,
    paper_row,
    register_model,
)


def test_families_and_their_facts():
    assert model_names() == ("henet", "shufflenet")
    henet, shufflenet = model_spec("henet"), model_spec("shufflenet")
    assert (henet.accepts_width, henet.conv_bias) == (True, True)
    assert (shufflenet.accepts_width, shufflenet.conv_bias) == (False, False)
    assert paper_row("henet", 3)["accuracy"] == 89.40
    assert paper_row("shufflenet", 5)["time_s"] == 10.156
    assert paper_row("henet", 5) is None  # the paper has no HENet-r5
    with pytest.raises(UnknownModelError, match="choose one of: henet, shufflenet"):
        model_spec("resnet")


def test_a_family_name_is_registered_once():
    with pytest.raises(ValueError, match="already registered"):
        register_model(ModelSpec("henet", "HENet", "x:y", True, True, "z"))


def test_the_conv_bias_rule_follows_the_family_not_the_model_name():
    """A ShuffleNet named anything is counted without conv bias, as the paper does."""
    model = build_model("shufflenet", repeat=3, name="my_net")
    spec = detect_family(model)
    assert spec is model_spec("shufflenet")
    counted = summarize(model, conv_bias=spec.conv_bias)["paper_params"]
    with_bias = summarize(model, conv_bias=True)["paper_params"]
    assert counted == 517_114 and with_bias > counted  # the paper: 515K
    assert detect_family(build_model("henet", repeat=2, name="shufflenet_lookalike")) \
        is model_spec("henet")


def test_shared_argument_rules_and_width():
    for kwargs in ({"repeat": 0}, {"classes": 1}):
        for family in model_names():
            with pytest.raises(ModelArgumentError):
                build_model(family, **kwargs)
    with pytest.raises(ModelArgumentError, match="--width works only for: henet"):
        build_model("shufflenet", repeat=1, width_multiplier=2.0)


def test_profile_and_train_refuse_a_width_the_family_does_not_have():
    """They used to drop it: `profile --model shufflenet --width 1.5` printed width 1's
    counts, and `train` recorded width 2.0 in config.json for a width-1 model."""
    from henet_edge.henet_keras.profile import profile_family
    from henet_edge.henet_keras.run import TrainConfig

    with pytest.raises(ModelArgumentError, match="--width works only for: henet"):
        profile_family("shufflenet", repeat=1, classes=10, input_size=31,
                       width_multiplier=1.5)
    with pytest.raises(ModelArgumentError, match="ShuffleNet has no width multiplier"):
        TrainConfig(data="data", model="shufflenet", repeat=1, width_multiplier=2.0)
    assert TrainConfig(data="data", model="henet", width_multiplier=2.0).width_multiplier == 2
    assert TrainConfig(data="data", model="shufflenet").width_multiplier == 1.0


def test_builders_keep_their_signatures():
    import henet_edge.henet_keras as package

    params = inspect.signature(package.build_henet).parameters
    assert {"repeat", "classes", "input_size", "width_multiplier", "weight_decay"} <= set(params)
    assert "width_multiplier" not in inspect.signature(package.build_shufflenet).parameters


def test_importing_the_package_imports_no_tensorflow_and_leaves_the_environment():
    code = ("import json, os, sys; before = dict(os.environ); "
            "import henet_edge.henet_keras, henet_edge.henet_keras.registry; "
            "print(json.dumps([dict(os.environ) == before, "
            "[m for m in ('tensorflow', 'keras') if m in sys.modules]]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert json.loads(out.stdout) == [True, []]
