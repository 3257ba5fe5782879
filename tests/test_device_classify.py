"""``henet-edge classify``: real bundles, real interpreters, real image files."""

from __future__ import annotations

import io
import json
import os
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from henet_edge.cli import main
from henet_edge.device import classify as classify_mod
from henet_edge.device.bundle import BundleError, sha256_file
from henet_edge.device.classify import Classifier, ClassifyError, classify_paths
from henet_edge.device.inputs import LabelsError, iter_inputs, read_labels
from henet_edge.device.preprocess import open_image
from henet_edge.device.runtime import ModelError, softmax

from .device_helpers import (
    colour_image,
    copy_bundle,
    golden,
    rewrite_manifest,
    structured_image,
    wrong_shape_model,
)


@pytest.fixture(scope="module")
def float32(tiny_bundle) -> Classifier:
    return Classifier(tiny_bundle, precision="float32", top_k=3)


def png_declaring(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header declares ``width`` x ``height`` pixels (a bomb)."""
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:20] = width.to_bytes(4, "big")
    data[20:24] = height.to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    path.write_bytes(bytes(data))
    return path


# ------------------------------------------------------------------ results
@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_golden_images_reproduce_desktop_results(tiny_bundle, precision):
    classifier = Classifier(tiny_bundle, precision=precision)
    assert classifier.precision == precision
    for entry in golden(tiny_bundle):
        prediction = classifier.classify_file(tiny_bundle / entry["file"])
        expected = entry[precision]
        np.testing.assert_allclose(prediction.logits, expected["logits"], rtol=1e-5, atol=1e-4)
        assert classifier.labels.index(prediction.label) == expected["top1"]


def test_float32_matches_keras_logits(float32, tiny_bundle):
    for entry in golden(tiny_bundle):
        logits = np.asarray(float32.classify_file(tiny_bundle / entry["file"]).logits)
        keras = np.asarray(entry["keras"]["logits"])
        np.testing.assert_allclose(logits, keras, atol=1e-3 * max(1.0, np.ptp(keras)))


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_the_shipped_goldens_reproduce_from_a_hand_built_input(precision):
    """An input built here from the manifest's words alone (RGB, the centre crop, /255,
    mean and std), independent of the preprocessing code, gives the logits the shipped
    bundle recorded when it was converted. (The tiny bundle's goldens come from the code
    under test, so a preprocessing bug would be in both.)"""
    from henet_edge.device.classify import DEFAULT_BUNDLE
    from henet_edge.device.runtime import TFLiteModel

    manifest = json.loads((DEFAULT_BUNDLE / "manifest.json").read_text())
    pre = manifest["preprocessing"]
    assert pre["color"] == "RGB" and pre["layout"] == "NHWC"
    model = TFLiteModel(DEFAULT_BUNDLE / manifest["models"][precision]["file"])
    offset, side = (pre["canonical_size"] - pre["input_size"]) // 2, pre["input_size"]
    entries = golden(DEFAULT_BUNDLE)
    assert len(entries) >= 8
    for entry in entries:
        with Image.open(DEFAULT_BUNDLE / entry["file"]) as png:
            rgb = np.asarray(png.convert("RGB"), dtype=np.float64)
        assert rgb.shape == (pre["canonical_size"], pre["canonical_size"], 3)
        crop = rgb[offset:offset + side, offset:offset + side]
        x = ((crop / 255.0 - np.asarray(pre["mean"])) / np.asarray(pre["std"]))
        logits = model(x.astype(np.float32))
        np.testing.assert_allclose(logits, entry[precision]["logits"], rtol=1e-4, atol=1e-3)
        assert int(np.argmax(logits)) == entry[precision]["top1"]
        classified = Classifier(DEFAULT_BUNDLE, precision=precision).classify_file(
            DEFAULT_BUNDLE / entry["file"])
        assert classified.label == manifest["labels"][entry[precision]["top1"]]
        np.testing.assert_allclose(classified.logits, logits, rtol=1e-4, atol=1e-3)


def test_default_precision_is_int8_and_describe_names_runtime(tiny_bundle):
    classifier = Classifier(tiny_bundle)
    info = classifier.describe()
    assert classifier.precision == "int8"
    assert info["precision"] == "int8"
    assert info["bundle_id"] == classifier.bundle.id
    assert info["runtime"] in ("ai_edge_litert", "tflite_runtime", "tensorflow")
    assert info["delegate"]


def test_prediction_is_a_sorted_distribution_with_timings(int8, tiny_bundle):
    entry = golden(tiny_bundle)[0]
    prediction = int8.classify_file(tiny_bundle / entry["file"])
    probs = [p for _, p in prediction.top]
    assert len(prediction.top) == min(3, len(int8.labels))
    assert probs == sorted(probs, reverse=True)
    assert sum(probs) == pytest.approx(1.0, abs=1e-6)  # top 3 of 3 labels
    assert prediction.top[0][0] == int8.labels[entry["int8"]["top1"]]  # as the desktop saw it
    assert {label for label, _ in prediction.top} == set(int8.labels)  # top 3 of 3
    assert set(prediction.timings_ms) == {"decode", "preprocess", "invoke", "post"}
    data = prediction.to_dict()
    assert data["label"] == prediction.label
    assert len(data["logits"]) == len(int8.labels)


def test_top_k_is_capped_and_validated(tiny_bundle):
    assert Classifier(tiny_bundle, top_k=50).top_k == 3
    with pytest.raises(ClassifyError, match="top-k"):
        Classifier(tiny_bundle, top_k=0)


# ------------------------------------------------------------------ image kinds
def test_exif_orientation_is_honoured(int8, tmp_path):
    upright = structured_image(1, (40, 64))  # portrait
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # as a sideways camera saves it
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    stored.save(tmp_path / "rotated.png", exif=exif)
    stored.save(tmp_path / "rotated.jpg", exif=exif, quality=95)

    loaded = open_image(str(tmp_path / "rotated.png"))
    assert np.array_equal(int8.prepare(loaded), int8.prepare(upright))
    assert not np.array_equal(int8.prepare(stored), int8.prepare(upright))
    jpeg = open_image(str(tmp_path / "rotated.jpg"))
    assert int8.prepare(jpeg).shape == int8.prepare(upright).shape
    from henet_edge.device.preprocess import to_rgb

    assert to_rgb(jpeg).size == upright.size


@pytest.mark.parametrize("size", [(41, 32), (32, 41), (97, 64), (64, 97)])
def test_every_orientation_crops_the_centre_of_the_photo_as_displayed(tmp_path, size):
    # An odd difference of the sides: the centre rounds one way in the displayed image,
    # and each EXIF flip must map that, not round again in the stored pixels.
    from PIL import ImageOps

    from henet_edge.device.preprocess import canonical

    stored = structured_image(3, size)
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = tmp_path / f"o{orientation}.png"
        stored.save(path, exif=exif)
        tagged = open_image(str(path))
        upright = ImageOps.exif_transpose(open_image(str(path)))
        np.testing.assert_array_equal(canonical(tagged, 32), canonical(upright, 32),
                                      err_msg=f"orientation {orientation}")


def _same_input(classifier, path: Path, reference: Image.Image) -> None:
    decoded = open_image(str(path))
    np.testing.assert_array_equal(classifier.prepare(decoded), classifier.prepare(reference))
    assert classifier.classify_file(path).logits == classifier.classify_image(reference).logits


def test_rgba_is_composited_on_white(int8, tmp_path):
    Image.new("RGBA", (40, 30), (10, 200, 30, 0)).save(tmp_path / "clear.png")
    _same_input(int8, tmp_path / "clear.png", Image.new("RGB", (40, 30), (255, 255, 255)))
    opaque = structured_image(2).convert("RGBA")
    opaque.save(tmp_path / "opaque.png")
    _same_input(int8, tmp_path / "opaque.png", opaque.convert("RGB"))


def test_palette_grayscale_and_16_bit_images(int8, tmp_path):
    palette = structured_image(3).quantize(16)
    palette.save(tmp_path / "palette.png")
    _same_input(int8, tmp_path / "palette.png", palette.convert("RGB"))

    gray = structured_image(4).convert("L")
    gray.save(tmp_path / "gray.png")
    _same_input(int8, tmp_path / "gray.png", gray.convert("RGB"))

    values = np.asarray(gray, dtype=np.uint16)
    Image.fromarray(values * 257).save(tmp_path / "deep.png")  # 16-bit grayscale PNG
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    _same_input(int8, tmp_path / "deep.png", gray.convert("RGB"))


def test_bmp_webp_cmyk_and_odd_sizes(int8, tmp_path):
    image = structured_image(5)
    image.save(tmp_path / "a.bmp")
    _same_input(int8, tmp_path / "a.bmp", image)
    image.save(tmp_path / "a.webp", lossless=True)
    _same_input(int8, tmp_path / "a.webp", image)

    image.convert("CMYK").save(tmp_path / "cmyk.jpg")
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    structured_image(6, (1, 1)).save(tmp_path / "dot.png")
    structured_image(7, (400, 5)).save(tmp_path / "strip.png")
    structured_image(8, (3000, 2000)).save(tmp_path / "big.jpg", quality=80)
    results = list(classify_paths(int8, [tmp_path / n for n in
                                         ("cmyk.jpg", "dot.png", "strip.png", "big.jpg")]))
    assert [r.error for r in results] == [None] * 4
    for name in ("cmyk.jpg", "dot.png", "strip.png"):  # each as Pillow's own full decode
        with Image.open(tmp_path / name) as reference:
            _same_input(int8, tmp_path / name, reference.convert("RGB"))
    with Image.open(tmp_path / "big.jpg") as reference:  # drafted: close, not bit-equal
        full = int8.prepare(reference.convert("RGB"))
    drafted = int8.prepare(open_image(str(tmp_path / "big.jpg")))
    assert np.abs(drafted.astype(np.float32) - full.astype(np.float32)).mean() < 0.05 * (
        np.ptp(full.astype(np.float32)))


# ------------------------------------------------------------------ bad files
def test_bad_files_get_errors_and_the_rest_go_on(int8, tmp_path):
    good = tmp_path / "good.png"
    colour_image(0).save(good)
    (tmp_path / "noise.jpg").write_bytes(os.urandom(2000))
    buf = io.BytesIO()
    structured_image(9, (300, 200)).save(buf, "JPEG", quality=90)
    (tmp_path / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (tmp_path / "notes.txt").write_text("not a picture\n")
    (tmp_path / "empty.png").write_bytes(b"")
    png_declaring(tmp_path / "bomb.png", 9000, 9000)  # 81 M pixels: over our limit
    png_declaring(tmp_path / "huge_bomb.png", 20000, 20000)  # over Pillow's own limit too
    names = ["noise.jpg", "good.png", "truncated.jpg", "notes.txt", "empty.png", "bomb.png",
             "huge_bomb.png", "missing.png", "good.png"]
    results = list(classify_paths(int8, [tmp_path / n for n in names]))

    assert [Path(r.path).name for r in results] == names
    assert [r.ok for r in results] == [False, True, False, False, False, False, False, False,
                                       True]
    errors = {Path(r.path).name: r.error for r in results if not r.ok}
    assert "not an image" in errors["noise.jpg"]
    assert "truncated" in errors["truncated.jpg"]
    assert "not an image" in errors["notes.txt"]
    assert "empty file" in errors["empty.png"]
    assert "9000x9000" in errors["bomb.png"] and "limit" in errors["bomb.png"]
    assert "limit" in errors["huge_bomb.png"]
    assert "no such file" in errors["missing.png"]
    assert results[1].prediction.logits == results[-1].prediction.logits


def test_unreadable_files_inside_folders(int8, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    colour_image(1).save(folder / "a.png")
    (folder / "b.jpg").symlink_to(tmp_path / "gone.jpg")  # dangling link
    locked = folder / "c.png"
    colour_image(2).save(locked)
    locked.chmod(0)
    results = {Path(r.path).name: r for r in classify_paths(int8, [folder])}
    assert results["a.png"].ok
    assert not results["b.jpg"].ok and "cannot read" in results["b.jpg"].error
    if os.geteuid() != 0:  # root reads mode-000 files anyway
        assert not results["c.png"].ok and "cannot read" in results["c.png"].error


def test_folders_are_walked_sorted_recursively_skipping_other_files(tmp_path):
    root = tmp_path / "in"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / ".hidden").mkdir()
    for rel in ("b.JPG", "a.png", "sub/c.webp", "sub/deeper/d.bmp", ".hidden/e.png",
                ".f.png", "notes.txt", "sub/x.tiff"):
        (root / rel).write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    found = list(iter_inputs([root, tmp_path / "empty", tmp_path / "nope"]))
    assert [(p.relative_to(tmp_path).as_posix(), e is None) for p, e in found] == [
        ("in/a.png", True), ("in/b.JPG", True), ("in/sub/c.webp", True),
        ("in/sub/deeper/d.bmp", True), ("empty", False), ("nope", False)]


# ------------------------------------------------------------------ bad models
def test_missing_model_and_bad_model_files(tmp_path, tiny_bundle):
    with pytest.raises(ClassifyError, match="no such model"):
        Classifier(tmp_path / "nothing")
    with pytest.raises(BundleError, match="not a bundle"):
        Classifier(tmp_path)
    fake = tmp_path / "fake.tflite"
    fake.write_bytes(b"definitely not a flatbuffer")
    with pytest.raises(ModelError, match="not a loadable TFLite model"):
        Classifier(fake, labels=tiny_bundle / "labels.txt")


def test_hash_mismatch_is_refused(tmp_path, tiny_bundle):
    damaged = copy_bundle(tiny_bundle, tmp_path / "b")
    model = damaged / "model_int8.tflite"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256 mismatch"):
        Classifier(damaged)


def test_wrong_input_shape(tmp_path, tiny_bundle):
    other = wrong_shape_model(tmp_path, len(read_labels(tiny_bundle / "labels.txt")))
    with pytest.raises(ClassifyError, match="wrong input shape"):
        Classifier(other, labels=tiny_bundle / "labels.txt")
    declared = copy_bundle(tiny_bundle, tmp_path / "b")  # a manifest true to itself ...
    manifest = json.loads((declared / "manifest.json").read_text())
    rewrite_manifest(declared, input_shape=[1, 32, 32, 3],
                     preprocessing={**manifest["preprocessing"], "input_size": 32})
    with pytest.raises(ClassifyError, match="wrong input shape"):  # ... but not to its model
        Classifier(declared)


def test_the_manifests_tensors_must_be_the_models(tmp_path, tiny_bundle):
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    int8 = manifest["models"]["int8"]
    swapped = copy_bundle(tiny_bundle, tmp_path / "swapped")  # int8 names the float32 file
    rewrite_manifest(swapped, models={**manifest["models"], "int8": {
        **int8, "file": "model_float32.tflite"}})
    with pytest.raises(ClassifyError, match="input dtype float32 but the manifest declares int8"):
        Classifier(swapped, precision="int8")
    scaled = copy_bundle(tiny_bundle, tmp_path / "scaled")  # wrong output scale: wrong logits
    rewrite_manifest(scaled, models={**manifest["models"], "int8": {
        **int8, "output": {**int8["output"], "scale": int8["output"]["scale"] * 2}}})
    with pytest.raises(ClassifyError, match="output quantization"):
        Classifier(scaled, precision="int8")
    Classifier(tiny_bundle, precision="int8")  # the true manifest loads


def test_labels_must_match_the_output_size(tmp_path, tiny_bundle):
    labels = read_labels(tiny_bundle / "labels.txt")
    (tmp_path / "short.txt").write_text("\n".join(labels[:-1]) + "\n")
    with pytest.raises(ClassifyError, match=f"{len(labels)} outputs but there are "
                                            f"{len(labels) - 1} labels"):
        Classifier(tiny_bundle / "model_int8.tflite", labels=tmp_path / "short.txt")
    more = copy_bundle(tiny_bundle, tmp_path / "b")
    # A consistent bundle (manifest, labels.txt and model.classes agree; no golden results
    # to disagree) whose model has fewer outputs: only the model itself can tell.
    (more / "labels.txt").write_text("\n".join([*labels, "extra"]) + "\n")
    manifest = json.loads((more / "manifest.json").read_text())
    rewrite_manifest(more, labels=[*labels, "extra"],
                     model={**manifest["model"], "classes": len(labels) + 1}, golden=None,
                     files={**manifest["files"], "labels.txt": sha256_file(more / "labels.txt")})
    with pytest.raises(ClassifyError, match="labels"):
        Classifier(more)
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(LabelsError, match="empty"):
        read_labels(tmp_path / "empty.txt")


def test_bare_tflite_labels_and_precision(tmp_path, tiny_bundle):
    # labels.txt beside the model is used when --labels is not given
    classifier = Classifier(tiny_bundle / "model_float32.tflite")
    assert classifier.precision == "float32"
    assert classifier.labels == read_labels(tiny_bundle / "labels.txt")
    lone = tmp_path / "lone.tflite"
    lone.write_bytes((tiny_bundle / "model_int8.tflite").read_bytes())
    with pytest.raises(ClassifyError, match="--labels"):
        Classifier(lone)
    with pytest.raises(ClassifyError, match="--precision float32 but this file is a int8"):
        Classifier(lone, labels=tiny_bundle / "labels.txt", precision="float32")
    with pytest.raises(ClassifyError, match="bundle has its own labels"):
        Classifier(tiny_bundle, labels=tiny_bundle / "labels.txt")


def test_precision_missing_from_bundle(tmp_path, tiny_bundle):
    only_float = copy_bundle(tiny_bundle, tmp_path / "b")
    manifest = json.loads((only_float / "manifest.json").read_text())
    del manifest["models"]["int8"]
    rewrite_manifest(only_float, models=manifest["models"])
    assert Classifier(only_float).precision == "float32"
    with pytest.raises(BundleError, match="no int8 model"):
        Classifier(only_float, precision="int8")


# ------------------------------------------------------------------ default model
def test_default_model_is_the_installed_bundle(tmp_path, tiny_bundle, monkeypatch):
    monkeypatch.setenv("HENET_EDGE_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(classify_mod, "DEFAULT_BUNDLE", tmp_path / "no-default")
    with pytest.raises(ClassifyError, match="--model"):
        Classifier()
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "current").symlink_to(tiny_bundle, target_is_directory=True)
    assert Classifier().bundle.root == tiny_bundle.resolve()
    (tmp_path / "home" / "current").unlink()
    (tmp_path / "home" / "current").symlink_to(tmp_path / "deleted-version")
    with pytest.raises(ClassifyError, match="broken"):
        Classifier()


def test_a_redeploy_does_not_change_a_loaded_bundle(tmp_path, tiny_bundle, monkeypatch):
    # A long-running classifier (serve, a camera loop) loaded ``current``; a deploy then
    # repoints it. Results must keep naming, and models keep coming from, what was loaded.
    monkeypatch.setenv("HENET_EDGE_HOME", str(tmp_path / "home"))
    first = copy_bundle(tiny_bundle, tmp_path / "home" / "versions" / "a")
    second = copy_bundle(tiny_bundle, tmp_path / "home" / "versions" / "b")
    rewrite_manifest(second, name="the next version")
    current = tmp_path / "home" / "current"
    current.symlink_to(first, target_is_directory=True)
    running = Classifier()
    current.unlink()
    current.symlink_to(second, target_is_directory=True)
    assert running.made_by()["bundle"] == sha256_file(first / "manifest.json")[:12]
    assert running.bundle.model_path("int8").parent == first.resolve()
    assert Classifier().made_by()["bundle"] == sha256_file(second / "manifest.json")[:12]


def test_default_model_falls_back_to_the_shipped_bundle(tmp_path, tiny_bundle, monkeypatch):
    monkeypatch.setenv("HENET_EDGE_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(classify_mod, "DEFAULT_BUNDLE", tiny_bundle)
    assert Classifier().bundle.root == tiny_bundle


# ------------------------------------------------------------------ command line
def _invoke(args):
    result = CliRunner().invoke(main, args)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result


def test_cli_streams_results_and_fails_if_any_file_failed(tmp_path, tiny_bundle):
    colour_image(0).save(tmp_path / "red.png")
    (tmp_path / "bad.jpg").write_bytes(b"garbage")
    result = _invoke(["classify", str(tmp_path / "red.png"), str(tmp_path / "bad.jpg"),
                      "--model", str(tiny_bundle)])
    assert result.exit_code == 1
    assert "red.png:" in result.stdout and "ms:" in result.stdout
    assert "bad.jpg: error: not an image" in result.stderr
    assert "1 of 2 inputs failed" in result.stderr

    ok = _invoke(["classify", str(tmp_path / "red.png"), "--model", str(tiny_bundle),
                  "--top-k", "2"])
    assert ok.exit_code == 0


def test_cli_json_lines(tmp_path, tiny_bundle):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for channel in range(3):
        colour_image(channel, seed=channel).save(folder / f"{channel}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    result = _invoke(["classify", str(folder), "--model", str(tiny_bundle), "--json",
                      "--precision", "float32"])
    assert result.exit_code == 1
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [Path(d["path"]).name for d in lines] == ["0.png", "1.png", "2.png", "broken.png"]
    assert [d["ok"] for d in lines] == [True, True, True, False]
    assert lines[3]["error"]
    assert set(lines[0]["timings_ms"]) == {"decode", "preprocess", "invoke", "post"}


@pytest.mark.parametrize("extra, message", [
    (["--model", "MISSING"], "no such model"),
    (["--model", "DAMAGED"], "sha256 mismatch"),
    (["--model", "BUNDLE", "--labels", "BUNDLE/labels.txt"], "own labels"),
])
def test_cli_user_errors_are_one_line(tmp_path, tiny_bundle, extra, message):
    damaged = copy_bundle(tiny_bundle, tmp_path / "damaged")
    (damaged / "labels.txt").write_text("tampered\n")
    paths = {"MISSING": str(tmp_path / "missing"), "DAMAGED": str(damaged),
             "BUNDLE": str(tiny_bundle)}
    args = [paths.get(a, a).replace("BUNDLE", str(tiny_bundle)) for a in extra]
    colour_image(0).save(tmp_path / "x.png")
    result = _invoke(["classify", str(tmp_path / "x.png"), *args])
    assert result.exit_code == 1
    assert message in result.stderr
    assert result.stderr.count("\n") == 1


def test_a_keras_model_is_pointed_at_convert(tiny_run):
    with pytest.raises(ClassifyError, match=r"needs a bundle folder or a \.tflite.*convert"):
        Classifier(tiny_run / "model.keras")


def test_an_empty_image_file_is_called_empty(tmp_path):
    from henet_edge.device.preprocess import open_image

    empty = tmp_path / "photo.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty file"):
        open_image(str(empty))


def test_the_runtimes_delegate_banner_is_dropped_and_other_stderr_kept(capfd):
    from henet_edge.device.runtime import without_delegate_banner

    with without_delegate_banner():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        os.write(2, b"WARNING: something the user must see\n")
    assert capfd.readouterr().err == "WARNING: something the user must see\n"


def test_the_banner_filter_is_safe_across_threads(capfd):
    import threading

    from henet_edge.device.runtime import without_delegate_banner

    def load(i: int) -> None:
        with without_delegate_banner():
            os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
            os.write(2, f"line {i}\n".encode())

    threads = [threading.Thread(target=load, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    os.write(2, b"after\n")  # descriptor 2 is the real stderr again
    err = capfd.readouterr().err
    assert sorted(err.splitlines()) == sorted([f"line {i}" for i in range(16)] + ["after"])
    assert err.endswith("after\n")


def test_classify_prints_no_runtime_banner(tmp_path, tiny_bundle):
    import subprocess
    import sys

    image = tmp_path / "x.png"
    Image.new("RGB", (40, 40), (200, 30, 30)).save(image)
    proc = subprocess.run([sys.executable, "-m", "henet_edge.cli", "classify", str(image),
                           "--model", str(tiny_bundle)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "x.png:" in proc.stdout
    assert proc.stderr.startswith("model: ")
    assert "Created TensorFlow Lite" not in proc.stderr


def test_softmax_normalises_one_image_or_each_row_of_a_batch():
    logits = np.array([[1000.0, 1000.0, 0.0], [0.0, np.log(3.0), -np.inf]])
    rows = softmax(logits)  # large logits must not overflow
    assert np.allclose(rows, [[0.5, 0.5, 0.0], [0.25, 0.75, 0.0]])
    assert np.allclose(softmax(logits[1]), rows[1])
