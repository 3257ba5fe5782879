"""Hostile bundles: a strict manifest structure, and no file used that was not hashed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from henet_edge.cli import main
from henet_edge.device.bundle import BundleError, is_bundle, load_bundle, verify_files
from henet_edge.device.manifest import read_manifest, sha256_file

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
    bundle = _symlinked_model(tiny_bundle, tmp_path)
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


# ------------------------------------------------------------------ the schema, through commands
def _image(folder) -> Path:
    return next(p for p in sorted(Path(folder).rglob("*")) if p.is_file())


def _edit(**top):
    def apply(bundle: Path) -> None:
        rewrite_manifest(bundle, **top)
    return apply


def _edit_pre(**values):
    def apply(bundle: Path) -> None:
        rewrite_manifest(bundle, preprocessing={**_manifest(bundle)["preprocessing"], **values})
    return apply


def _text(text: str):
    def apply(bundle: Path) -> None:
        (bundle / "manifest.json").write_text(text)
    return apply


def _reversed_labels(bundle: Path) -> None:
    rewrite_manifest(bundle, labels=_manifest(bundle)["labels"][::-1])


def _extra_label(bundle: Path) -> None:
    rewrite_manifest(bundle, labels=[*_manifest(bundle)["labels"], "extra"])


def _zero_int8_scale(bundle: Path) -> None:
    models = _manifest(bundle)["models"]
    models["int8"]["input"]["scale"] = 0.0
    rewrite_manifest(bundle, models=models)


def _golden_outside(bundle: Path) -> None:
    """golden.json (re-hashed, so it passes its hash) names an image outside the bundle."""
    golden = json.loads((bundle / "golden.json").read_text())
    golden["images"][0]["file"] = "../elsewhere.png"
    (bundle / "golden.json").write_text(json.dumps(golden))
    files = _manifest(bundle)["files"]
    rewrite_manifest(bundle, files={**files, "golden.json": sha256_file(bundle / "golden.json")})


DAMAGED = {
    "top-level array": (_text("[1, 2]"), "not an object"),
    "100000-deep nesting": (_text("[" * 100_000 + "]" * 100_000), "nested too deeply"),
    "files as a list": (_edit(files=["model_int8.tflite"]), "'files'"),
    "files with a bad hash": (_edit(files={"labels.txt": "xyz"}), "'files.labels.txt'"),
    "models empty": (_edit(models={}), "'models'"),
    "models a string": (_edit(models="model_int8.tflite"), "'models'"),
    "input_shape 5": (_edit(input_shape=5), "'input_shape'"),
    "input_shape NCHW": (_edit(input_shape=[1, 3, 31, 31]), "'input_shape'"),
    "input_shape vs input_size": (_edit(input_shape=[1, 32, 32, 3]), "'input_shape'"),
    "preprocessing a string": (_edit(preprocessing="rgb"), "'preprocessing'"),
    "canonical_size 0": (_edit_pre(canonical_size=0), "'preprocessing.canonical_size'"),
    "canonical_size 16": (_edit_pre(canonical_size=16), "'preprocessing.canonical_size'"),
    "mean of 2": (_edit_pre(mean=[0.5, 0.5]), "'preprocessing.mean'"),
    "std of zeros": (_edit_pre(std=[0, 0, 0]), "'preprocessing.std'"),
    "std negative": (_edit_pre(std=[0.2, -0.2, 0.2]), "'preprocessing.std'"),
    "labels vs classes": (_extra_label, "'model.classes'"),
    "labels vs labels.txt": (_reversed_labels, "labels.txt"),
    "int8 scale 0": (_zero_int8_scale, "'models.int8.input.scale'"),
    "golden image outside": (_golden_outside, "images[0].file"),
}


@pytest.fixture(scope="module")
def damaged_bundles(tiny_bundle, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("damaged")
    bundles = {}
    for n, (name, (damage, _)) in enumerate(DAMAGED.items()):
        bundles[name] = copy_bundle(tiny_bundle, root / f"b{n}")
        damage(bundles[name])
    return bundles


def _command(command: str, bundle: Path, image_folder) -> list[str]:
    """A real device command on ``bundle``."""
    return {
        "classify": ["classify", str(_image(image_folder)), "--model", str(bundle)],
        "doctor": ["doctor", "--model", str(bundle)],
        "bench": ["bench", str(bundle), "--runs", "2", "--repeats", "1", "--warmup", "0"],
        "camera": ["camera", "--source", str(image_folder), "--frames", "1", "--model",
                   str(bundle)],
        "evaluate": ["evaluate", str(bundle), "--data", str(image_folder)],
        "selftest": ["selftest", str(bundle)],
    }[command]


@pytest.mark.parametrize("command", ["classify", "doctor", "bench", "camera", "evaluate",
                                     "selftest"])
@pytest.mark.parametrize("case", list(DAMAGED))
def test_damaged_manifest_is_one_line_naming_the_field(damaged_bundles, image_folder, case,
                                                       command):
    bundle, field = damaged_bundles[case], DAMAGED[case][1]
    result = CliRunner().invoke(main, _command(command, bundle, image_folder))
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    assert field in result.output
    if command != "doctor":  # doctor prints every check, the bundle's on one line
        assert len(result.output.strip().splitlines()) == 1, result.output


def test_a_golden_entry_that_is_no_image_fails_the_selftest_in_one_line(tiny_bundle, tmp_path):
    # golden.json is hashed and names a file inside the bundle, but not an image
    bundle = copy_bundle(tiny_bundle, tmp_path / "b")
    golden = json.loads((bundle / "golden.json").read_text())
    golden["images"][0]["file"] = "labels.txt"
    (bundle / "golden.json").write_text(json.dumps(golden))
    files = _manifest(bundle)["files"]
    rewrite_manifest(bundle, files={**files, "golden.json": sha256_file(bundle / "golden.json")})
    result = CliRunner().invoke(main, ["selftest", str(bundle), "--json"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert result.output.strip().splitlines() == [
        f"Error: {bundle}: golden image labels.txt: not an image file that is read here "
        f"(only JPEG, PNG, BMP or WebP; unrecognised format)"]


@pytest.mark.parametrize("command", ["classify", "bench", "camera", "evaluate", "selftest"])
def test_a_sound_bundle_passes_the_same_commands(tiny_bundle, image_folder, command):
    """The table's checks fail only on damage: the undamaged bundle works."""
    result = CliRunner().invoke(main, _command(command, tiny_bundle, image_folder))
    assert result.exit_code == 0, result.output


def test_bundles_already_written_still_load_and_write_back_the_same(tiny_bundle):
    """Backward compatible: the shipped default bundle (written before the Manifest type)
    parses, and the one writer gives back the same JSON, key order included."""
    from henet_edge.device.classify import DEFAULT_BUNDLE

    for bundle in (DEFAULT_BUNDLE, tiny_bundle):
        text = (bundle / "manifest.json").read_text()
        manifest = read_manifest(bundle / "manifest.json")
        assert list(json.loads(manifest.to_json())) == list(json.loads(text))
        assert json.loads(manifest.to_json()) == json.loads(text)
        assert load_bundle(bundle).manifest == manifest


def test_the_id_names_the_manifest_that_was_checked(monkeypatch, tmp_path, tiny_bundle):
    """A manifest replaced while the bundle loads does not lend the loaded bundle its id:
    the id is the hash of the very bytes that were parsed and checked."""
    import hashlib

    from henet_edge.device import bundle as bundle_module

    folder = copy_bundle(tiny_bundle, tmp_path / "b")
    checked = (folder / "manifest.json").read_bytes()
    real = bundle_module.content_problems

    def replaced_meanwhile(root, manifest):
        (folder / "manifest.json").write_bytes(checked + b"\n")  # same content, new hash
        return real(root, manifest)

    monkeypatch.setattr(bundle_module, "content_problems", replaced_meanwhile)
    loaded = load_bundle(folder)
    assert (folder / "manifest.json").read_bytes() != checked
    assert loaded.id == hashlib.sha256(checked).hexdigest()


def test_is_bundle_is_the_one_test_of_a_model_argument(tiny_bundle, tmp_path):
    assert is_bundle(tiny_bundle) and is_bundle(tiny_bundle / "manifest.json")
    assert is_bundle(tmp_path)  # a folder: load_bundle then says it is not one
    assert not is_bundle(tiny_bundle / "model_int8.tflite")


# ------------------------------------------------------------------ the one verifier's users
def _symlinked_model(tiny_bundle: Path, tmp_path: Path) -> Path:
    bundle = copy_bundle(tiny_bundle, tmp_path / "b")
    outside = tmp_path / "outside.tflite"
    model = bundle / "model_int8.tflite"
    outside.write_bytes(model.read_bytes())
    model.unlink()
    os.symlink(outside, model)
    return bundle


def test_symlink_outside_refused_by_classify(tmp_path, tiny_bundle, image_folder):
    bundle = _symlinked_model(tiny_bundle, tmp_path)
    result = CliRunner().invoke(main, ["classify", str(_image(image_folder)), "--model",
                                       str(bundle)])
    assert result.exit_code == 1
    assert "models.int8.file: 'model_int8.tflite' is not a path inside the bundle" in (
        result.output)


def test_symlink_outside_refused_by_the_agent(tmp_path, tiny_bundle):
    from henet_edge.deploy import agent

    bundle = _symlinked_model(tiny_bundle, tmp_path)
    result = agent.verify(str(bundle), sha256_file(bundle / "manifest.json"))
    assert not result["ok"]
    assert result["problems"] == [
        "models.int8.file: 'model_int8.tflite' is not a path inside the bundle"]


def _shipped_agent(*args: str, user: tuple[int, int] | None = None) -> dict:
    """Run the program deploy sends to a device (``python3 - OP ARGS``) with a Python that
    has nothing of henet-edge: the manifest module must travel inside it."""
    import subprocess
    import sys

    from henet_edge.deploy.probe import agent_source

    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    proc = subprocess.run([python, "-I", "-", *args], input=agent_source(),
                          capture_output=True, cwd="/", user=user[0] if user else None,
                          group=user[1] if user else None, extra_groups=[] if user else None)
    assert proc.returncode == 0, proc.stderr.decode()
    return json.loads(proc.stdout.decode().splitlines()[-1])


def test_shipped_agent_carries_the_one_verifier(tmp_path, tiny_bundle):
    good = copy_bundle(tiny_bundle, tmp_path / "good")
    assert _shipped_agent("verify", str(good), sha256_file(good / "manifest.json"))["ok"]
    bad = _symlinked_model(tiny_bundle, tmp_path)
    answer = _shipped_agent("verify", str(bad), sha256_file(bad / "manifest.json"))
    assert answer["problems"] == [
        "models.int8.file: 'model_int8.tflite' is not a path inside the bundle"]
    _edit_pre(std=[0, 0, 0])(good)
    answer = _shipped_agent("verify", str(good), "")
    assert not answer["ok"] and "'preprocessing.std'" in answer["problems"][0]


# ------------------------------------------------------------------ unreadable files
def _deny(monkeypatch, target: Path) -> None:
    """Reading ``target`` (a file, or a folder's listing) fails as for a non-root user of
    a mode-000 file: PermissionError."""
    import builtins

    real_open, real_listdir = builtins.open, os.listdir
    target = str(target)

    def denied(path) -> bool:
        return isinstance(path, (str, os.PathLike)) and os.fspath(path) == target

    def fake_open(file, *args, **kwargs):
        if denied(file):
            raise PermissionError(13, "Permission denied", os.fspath(file))
        return real_open(file, *args, **kwargs)

    def fake_listdir(path="."):
        if denied(path):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_listdir(path)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(os, "listdir", fake_listdir)


@pytest.mark.parametrize("command", ["classify", "doctor"])
@pytest.mark.parametrize("what", ["manifest.json", "model_int8.tflite", "labels.txt", "."])
def test_unreadable_file_or_folder_is_named(monkeypatch, tmp_path, tiny_bundle, image_folder,
                                            what, command):
    bundle = copy_bundle(tiny_bundle, tmp_path / "b")
    image = _image(image_folder)
    target = bundle if what == "." else bundle / what
    _deny(monkeypatch, target)
    args = (["classify", str(image), "--model", str(bundle)] if command == "classify"
            else ["doctor", "--model", str(bundle)])
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    named = str(bundle) if what == "." else what
    assert f"{named}: cannot be read (permission denied)" in result.output
    if command == "classify":
        assert len(result.output.strip().splitlines()) == 1, result.output


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/usr/bin/python3"),
                    reason="needs root to run the agent as another user")
@pytest.mark.parametrize("what", ["manifest.json", "model_int8.tflite", "."])
def test_mode_000_as_a_real_non_root_user(tiny_bundle, what):
    """The shipped agent under a real unprivileged user: mode-000 files and folders are
    named, not a traceback (the device side shares the reader and verifier)."""
    import shutil
    import tempfile

    top = Path(tempfile.mkdtemp(prefix="henet-perm-"))
    try:
        top.chmod(0o755)
        bundle = copy_bundle(tiny_bundle, top / "b")
        for p in [bundle, *bundle.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        bundle_id = sha256_file(bundle / "manifest.json")
        (bundle / what).chmod(0)
        answer = _shipped_agent("verify", str(bundle), bundle_id, user=(65534, 65534))
        assert not answer["ok"]
        named = str(bundle) if what == "." else what
        assert answer["problems"][0] == f"{named}: cannot be read (permission denied)"
    finally:
        for p in [top, *top.rglob("*")]:
            p.chmod(0o755)
        shutil.rmtree(top)
