"""Hostile bundles: a strict manifest structure, and no file used that was not hashed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from henet_edge.cli import main
from henet_edge.device.bundle import BundleError, load_bundle, verify_files

from .device_helpers import copy_bundle, rewrite_manifest


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def _set_model_file(bundle: Path, precision: str, name: str) -> None:
    manifest = _manifest(bundle)
    manifest["models"][precision]["file"] = name
    (bundle / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("name", ["/etc/passwd", "../foreign.tflite", "unlisted.tflite"])
def test_model_file_must_be_inside_and_hashed(tmp_path, tiny_bundle, name):
    bundle = copy_bundle(tiny_bundle, tmp_path / "b")
    # A foreign model, a real TFLite file, next to (and inside) the bundle.
    (tmp_path / "foreign.tflite").write_bytes((bundle / "model_float32.tflite").read_bytes())
    (bundle / "unlisted.tflite").write_bytes((bundle / "model_float32.tflite").read_bytes())
    _set_model_file(bundle, "float32", name)
    with pytest.raises(BundleError, match=r"models.float32.file"):
        load_bundle(bundle)


def test_classify_refuses_unhashed_model(tmp_path, tiny_bundle, image_folder):
    bundle = copy_bundle(tiny_bundle, tmp_path / "b")
    (tmp_path / "foreign.tflite").write_bytes((bundle / "model_float32.tflite").read_bytes())
    _set_model_file(bundle, "float32", "../foreign.tflite")
    image = next(p for p in sorted(Path(image_folder).rglob("*")) if p.is_file())
    result = CliRunner().invoke(main, ["classify", str(image), "--model", str(bundle),
                                       "--precision", "float32"])
    assert result.exit_code != 0
    assert "models.float32.file" in result.output
    assert "Traceback" not in result.output


def test_symlink_to_outside_is_an_escape(tmp_path, tiny_bundle):
    """The stricter rule (the agent's): a listed file that resolves outside is refused."""
    bundle = copy_bundle(tiny_bundle, tmp_path / "b")
    outside = tmp_path / "outside.tflite"
    model = bundle / "model_int8.tflite"
    outside.write_bytes(model.read_bytes())
    model.unlink()
    os.symlink(outside, model)
    problems = verify_files(bundle, _manifest(bundle)["files"])
    assert problems == ["model_int8.tflite: path escapes the bundle"]
    with pytest.raises(BundleError, match="not a path inside the bundle"):
        load_bundle(bundle)


@pytest.mark.parametrize(("change", "field"), [
    ({"files": ["model_int8.tflite"]}, "'files'"),
    ({"models": {}}, "'models'"),
    ({"models": "model_int8.tflite"}, "'models'"),
    ({"input_shape": 5}, "'input_shape'"),
    ({"preprocessing": "rgb"}, "'preprocessing'"),
    ({"labels": "cat"}, "'labels'"),
    ({"golden": 3}, "'golden'"),
])
def test_wrong_structure_names_the_field(tmp_path, tiny_bundle, change, field):
    bundle = copy_bundle(tiny_bundle, tmp_path / "b")
    rewrite_manifest(bundle, **change)
    with pytest.raises(BundleError, match=field):
        load_bundle(bundle)


@pytest.mark.parametrize("text", ["[1, 2]", "[" * 100_000 + "]" * 100_000])
def test_top_level_array_and_deep_nesting(tmp_path, tiny_bundle, text):
    bundle = copy_bundle(tiny_bundle, tmp_path / "b")
    (bundle / "manifest.json").write_text(text)
    with pytest.raises(BundleError, match=r"manifest.json"):
        load_bundle(bundle)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads mode-000 files")
def test_unreadable_manifest_is_a_message(tmp_path, tiny_bundle):
    bundle = copy_bundle(tiny_bundle, tmp_path / "b")
    (bundle / "manifest.json").chmod(0)
    try:
        with pytest.raises(BundleError, match=r"manifest.json: cannot be read"):
            load_bundle(bundle)
    finally:
        (bundle / "manifest.json").chmod(0o644)
