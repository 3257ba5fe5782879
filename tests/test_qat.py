"""Quantization-aware training (``train --qat``): rounding as TFLite's int8 model rounds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from henet_edge.henet_keras.train import RunError, TrainConfig, train

from .conftest import killed_after_last_epoch


def _tiny_henet(seed: int = 0, family: str = "henet"):
    import keras

    from henet_edge.henet_keras.registry import model_spec

    keras.utils.set_random_seed(seed)
    return model_spec(family).build(repeat=1, fast_groups=True)


def _inputs(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 31, 31, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def qat_run(image_folder, tmp_path_factory):
    """A finished 1-epoch quantization-aware HENet-r1 run."""
    run_dir = tmp_path_factory.mktemp("qat") / "run"
    config = TrainConfig(data=str(image_folder), repeat=1, epochs=1, batch_size=8,
                         val_split=0.25, seed=0, qat=True)
    train(config, run_dir, show_bar=False, echo=lambda _m: None)
    return run_dir


def test_kernels_round_per_output_channel_to_127_symmetric_steps():
    from henet_edge.henet_keras.qat import fake_quant_kernel

    kernel = np.random.default_rng(1).normal(size=(3, 3, 4, 6)).astype(np.float32)
    kernel[..., 2] *= 100  # one channel's scale must not coarsen the others
    rounded = fake_quant_kernel(kernel).numpy()
    for c in range(6):
        step = np.abs(kernel[..., c]).max() / 127
        levels = rounded[..., c] / step
        assert np.allclose(levels, np.round(levels), atol=1e-3)
        assert np.abs(rounded[..., c] - kernel[..., c]).max() <= step / 2 + 1e-6
        assert len(np.unique(np.round(levels))) > 20
    depthwise = fake_quant_kernel(kernel.reshape(3, 3, 24), channel_axis=-1).numpy()
    assert depthwise.shape == (3, 3, 24)


def test_the_copy_keeps_the_weights_in_order_and_rounds_each_stored_tensor_once():
    from henet_edge.henet_keras.qat import (
        FakeQuant,
        calibrated_ranges,
        is_quantization_aware,
        quantization_aware,
        stored_tensors,
    )

    model = _tiny_henet()
    ranges = calibrated_ranges(model, _inputs(32))
    copy = quantization_aware(model, ranges)
    assert [w.path for w in copy.weights] == [w.path for w in model.weights]
    assert all(np.array_equal(a, b) for a, b in zip(copy.get_weights(), model.get_weights(),
                                                    strict=True))
    rounded = sorted(layer.name.removesuffix("_fake_quant") for layer in copy.layers
                     if isinstance(layer, FakeQuant))
    assert rounded == sorted([*stored_tensors(model), "image"])
    # Fused away or value-preserving: no tensor of their own in the int8 model.
    assert "stem_bn" not in rounded and "stem_conv" not in rounded and "flatten" not in rounded
    assert "s1b1_pw_bn" in rounded  # a batch norm with no ReLU after it is stored
    assert is_quantization_aware(copy) and not is_quantization_aware(model)
    lo, hi = ranges["s1b1_concat"]
    assert ranges["s1b1_add"] == ranges["s1b1_gc_relu"] == (lo, hi)  # a concat's one scale
    assert lo <= 0 <= hi and ranges["stem_relu"][0] == 0


@pytest.mark.parametrize("family", ["henet", "shufflenet"])
def test_the_simulation_uses_tflites_scales_and_rounds_its_first_tensor_as_tflite_does(family):
    from ai_edge_litert.interpreter import Interpreter

    from henet_edge.convert.tflite import to_int8
    from henet_edge.henet_keras.qat import calibrated_ranges, quantization_aware

    model = _tiny_henet(seed=2, family=family)
    calibration = _inputs(64, seed=3)
    ranges = calibrated_ranges(model, calibration)
    interpreter = Interpreter(model_content=to_int8(model, calibration),
                              experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    stored = {d["name"]: d for d in interpreter.get_tensor_details()
              if d["dtype"] == np.int8 and len(d["quantization_parameters"]["scales"]) == 1}
    checked = 0
    for tensor_name, detail in stored.items():
        # "model/stem_relu_1/Relu;model/stem_conv_1/convolution": the first op names it.
        parts = tensor_name.split(";")[0].split("/")
        layer = parts[1].removesuffix("_1") if len(parts) > 2 else None
        for name in () if layer is None else (layer, layer.replace("_conv", "_bn")):
            if name in ranges:
                lo, hi = ranges[name]
                assert detail["quantization"][0] == pytest.approx((hi - lo) / 255, rel=2e-3)
                checked += 1
    assert checked >= 15
    out = interpreter.get_output_details()[0]
    assert out["quantization"][0] == pytest.approx(np.subtract(*ranges["logits"][::-1]) / 255,
                                                   rel=2e-3)

    # The stem's stored tensor, TFLite's and the simulation's, step for step.
    import keras

    copy = quantization_aware(model, ranges)
    probe = keras.Model(copy.inputs, copy.get_layer("stem_relu_fake_quant").output)
    image = _inputs(4, seed=4)
    simulated = probe.predict(image, verbose=0)
    inp = interpreter.get_input_details()[0]
    (s_in, z_in) = inp["quantization"]
    stem = next(d for n, d in stored.items() if "/stem_relu" in n.split(";")[0])
    scale, zero = stem["quantization"]
    same = []
    for x, sim in zip(image, simulated, strict=True):
        interpreter.set_tensor(inp["index"], np.clip(np.round(x / s_in + z_in), -128, 127)
                               .astype(np.int8)[None])
        interpreter.invoke()
        steps = interpreter.get_tensor(stem["index"])[0].astype(np.int32) - zero
        same.append(np.round(sim / scale) == steps)
    assert np.mean(same) > 0.98


def test_a_qat_run_trains_the_copy_and_ships_the_plain_network(qat_run):
    import keras

    from henet_edge.henet_keras import layers as _layers  # noqa: F401
    from henet_edge.henet_keras.qat import is_quantization_aware

    saved = json.loads((qat_run / "config.json").read_text())
    assert saved["train"]["qat"] is True
    assert "quantization-aware: int8 rounding simulated" in (qat_run / "train.log").read_text()
    checkpoint = keras.models.load_model(qat_run / "checkpoint.keras")
    shipped = keras.models.load_model(qat_run / "model.keras", compile=False)
    assert is_quantization_aware(checkpoint) and not is_quantization_aware(shipped)
    assert all(np.array_equal(a, b) for a, b in zip(checkpoint.get_weights(),
                                                    shipped.get_weights(), strict=True))


def test_a_killed_qat_run_resumes_from_its_checkpoint_and_ships_the_same(qat_run, tmp_path):
    import keras

    copy = killed_after_last_epoch(qat_run, tmp_path / "killed")
    train(TrainConfig(data=None, model=None, repeat=None), copy, resume=True,
          show_bar=False, echo=lambda _m: None)
    before = keras.models.load_model(qat_run / "model.keras", compile=False).get_weights()
    after = keras.models.load_model(copy / "model.keras", compile=False).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))


def test_resuming_a_plain_run_with_qat_is_refused(tiny_run, tmp_path):
    copy = killed_after_last_epoch(tiny_run, tmp_path / "killed")
    before = (copy / "config.json").read_text()
    with pytest.raises(RunError, match="run was made with qat=False, not True"):
        train(TrainConfig(data=None, model=None, repeat=None, qat=True), copy, resume=True,
              show_bar=False, echo=lambda _m: None)
    assert (copy / "config.json").read_text() == before


def test_the_runs_table_names_a_quantization_aware_run(qat_run, tiny_run):
    from henet_edge.henet_keras.run import Run
    from henet_edge.henet_keras.run_table import markdown, run_row

    table = markdown([run_row(Run.load(qat_run)), run_row(Run.load(tiny_run))])
    assert table.count("quantization-aware") == 1
