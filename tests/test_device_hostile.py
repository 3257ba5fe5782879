"""Hostile inputs on the device: bounded memory, no hangs, escaped names, bounded options."""

from __future__ import annotations

import base64
import io
import json
import os
import struct
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, PngImagePlugin

from henet_edge.cli import main
from henet_edge.device.classify import Classifier, classify_paths
from henet_edge.device.inputs import (
    iter_inputs,
    json_path,
    parse_labels,
    printable,
    walk_images,
)
from henet_edge.device.preprocess import canonical, open_image

from .device_helpers import colour_image, png_header


def _invoke(args):
    result = CliRunner().invoke(main, args)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def thin_png(path: Path, width: int) -> Path:
    """A real, fully decodable ``width`` x 1 RGB PNG (a few KB)."""
    row = np.zeros((1, width, 3), np.uint8)
    row[0, :, 0] = 200
    Image.fromarray(row).save(path, optimize=True)
    return path


def _in_thread(fn, seconds: float = 20.0):
    """``fn()``'s result, failing the test if it does not return in time (a hang)."""
    box: dict = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except Exception as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "hung"
    if "error" in box:
        raise box["error"]
    return box["value"]


# ------------------------------------------------------------------ bounded memory
def test_very_thin_images_decode_with_little_memory(tmp_path):
    """200000x1 was scaled up to 6.4 M x 32 (1 GB); 2000000x1 ended in MemoryError."""
    for width in (200_000, 2_000_000):
        path = thin_png(tmp_path / f"thin{width}.png", width)
        # VmHWM: this process's own peak since exec (ru_maxrss would count the parent's
        # memory at fork time, which Linux carries across exec)
        script = ("import sys; from henet_edge.device.preprocess import canonical, "
                  "open_image; a = canonical(open_image(sys.argv[1], draft_size=32), 32); "
                  "hwm = [x.split()[1] for x in open('/proc/self/status') "
                  "if x.startswith('VmHWM:')][0]; print(a.shape, hwm)")
        done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True,
                              text=True, timeout=120, env={**os.environ, "PYTHONPATH":
                                                           str(Path(__file__).parents[1])})
        assert done.returncode == 0, done.stderr
        shape, peak_kb = done.stdout.rsplit(" ", 1)
        assert shape == "(32, 32, 3)"
        assert int(peak_kb) < 300_000, f"{width}x1 took {int(peak_kb) // 1000} MB"


def test_near_limit_16_bit_and_rgba_are_refused_by_decoded_size(tmp_path):
    deep = png_header(tmp_path / "deep.png", 7999, 8000, depth=16, colour=0)
    rgba = png_header(tmp_path / "rgba.png", 7999, 8000, depth=8, colour=6)
    for path in (deep, rgba):
        with pytest.raises(ValueError, match=r"MB decoded, over the 64 MB limit"):
            open_image(str(path))


def test_a_big_jpeg_decodes_at_a_reduced_scale(tmp_path):
    Image.new("RGB", (4000, 3000), (10, 200, 30)).save(tmp_path / "big.jpg", quality=70)
    image = open_image(str(tmp_path / "big.jpg"), draft_size=32)
    assert image.size == (500, 375)  # 1/8: both sides still at least 32
    assert open_image(str(tmp_path / "big.jpg")).size == (4000, 3000)  # no draft asked


def test_a_jpeg_with_a_forged_size_is_reported_not_classified(int8, tmp_path):
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", 8000, 7999)
    (tmp_path / "forged.jpg").write_bytes(bytes(data))
    [result] = classify_paths(int8, [tmp_path / "forged.jpg"])
    assert not result.ok and "decoder filler" in result.error


def test_canonical_matches_for_every_mode_and_a_16_bit_image_is_exact(tmp_path):
    gray = np.arange(64 * 48, dtype=np.uint32).reshape(48, 64) % 256
    deep = Image.fromarray((gray * 257).astype(np.uint16))
    assert deep.mode.startswith("I;16")
    reference = canonical(Image.fromarray(gray.astype(np.uint8)).convert("RGB"))
    np.testing.assert_array_equal(canonical(deep), reference)
    big = Image.new("RGBA", (3000, 1000), (0, 0, 255, 0))  # transparent: white
    assert (canonical(big) == 255).all()


@pytest.mark.parametrize("mode, key, other", [("RGB", (255, 0, 0), (0, 0, 255)),
                                               ("L", 7, 100), ("P", 1, 2)])
def test_the_colour_a_png_names_transparent_is_white_as_alpha_is(tmp_path, mode, key, other):
    """Only palette images had their transparent colour composited on white: in a grey or
    RGB PNG it kept its colour, so the model saw what no viewer shows."""
    from henet_edge.device.preprocess import open_image, to_rgb

    image = Image.new(mode, (64, 64), key)
    if mode == "P":
        image.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * 759)
    for x in range(32):  # the left half drawn in the other colour
        for y in range(64):
            image.putpixel((x, y), other)
    path = tmp_path / f"keyed-{mode}.png"
    image.save(path, transparency=key)
    rgb = np.asarray(to_rgb(open_image(str(path))))
    assert (rgb[:, 32:] == 255).all()  # the keyed half: white
    assert not (rgb[:, :32] == 255).all()  # the other half: its own colour
    square = canonical(open_image(str(path)))
    assert (square[:, -8:] == 255).all() and not (square[:, :8] == 255).all()


# ------------------------------------------------------------------ messages
def test_truncated_header_bmp_width_and_exif_messages(int8, tmp_path):
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "x" * 5000)
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG", pnginfo=info)
    data = buf.getvalue()
    (tmp_path / "header.png").write_bytes(data[:data.find(b"tEXt") + 100])
    buf = io.BytesIO()
    Image.new("RGB", (5, 5)).save(buf, "BMP")
    bmp = bytearray(buf.getvalue())
    bmp[18:22] = struct.pack("<i", -5)
    (tmp_path / "negative.bmp").write_bytes(bytes(bmp))
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010E] = "hello"
    colour_image(0).save(tmp_path / "exif.jpg", exif=exif.tobytes()[:-3])  # corrupt EXIF

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a leaked Pillow UserWarning fails here
        results = {Path(r.path).name: r for r in classify_paths(
            int8, [tmp_path / n for n in ("header.png", "negative.bmp", "exif.jpg")])}
    assert results["header.png"].error == ("truncated or corrupt image header "
                                           "(Truncated File Read)")
    assert results["negative.bmp"].error == "corrupt BMP header: width -5"
    assert results["exif.jpg"].ok


# ------------------------------------------------------------------ no hangs
def test_fifos_are_errors_not_hangs(int8, tmp_path, tiny_bundle):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    folder = tmp_path / "photos"
    folder.mkdir()
    colour_image(0).save(folder / "a.png")
    os.mkfifo(folder / "b.png")
    results = _in_thread(lambda: list(classify_paths(int8, [fifo, folder])))
    assert [(Path(r.path).name, r.ok) for r in results] == [
        ("pipe.jpg", False), ("a.png", True), ("b.png", False)]
    assert "FIFO" in results[0].error and "FIFO" in results[2].error
    result = _in_thread(lambda: CliRunner().invoke(main, [
        "bench", str(tiny_bundle), "--image", str(fifo), "--runs", "2", "--repeats", "1"]))
    assert result.exit_code == 1 and "FIFO" in result.stderr
    with pytest.raises(ValueError, match="a device"):
        _in_thread(lambda: open_image("/dev/zero"))


def test_deep_folders_and_folder_loops(tmp_path):
    deep = tmp_path / "deep"
    levels = [deep]
    deep.mkdir()
    for _ in range(1000):  # one level at a time: mkdir(parents=True) itself recurses
        levels.append(levels[-1] / "d")
        levels[-1].mkdir()
    colour_image(1).save(levels[-1] / "bottom.png")
    try:
        found = list(walk_images(deep))
    finally:  # bottom-up: pytest's own clean-up of old temporary folders recurses
        (levels[-1] / "bottom.png").unlink()
        for level in reversed(levels):
            level.rmdir()
    assert [(p.name, e) for p, e in found] == [("bottom.png", None)]

    loop = tmp_path / "loop"
    loop.mkdir()
    colour_image(2).save(loop / "a.png")
    (loop / "x.jpg").symlink_to(".")
    (loop / "sub").mkdir()
    (loop / "sub" / "up").symlink_to("..")
    found = list(walk_images(loop))
    assert [(p.relative_to(loop).as_posix(), e is None) for p, e in found] == [
        ("a.png", True), ("sub/up", False), ("x.jpg", False)]
    assert all("folder loop" in e for _, e in found[1:])


def test_empty_paths_are_refused(tiny_bundle):
    result = _invoke(["classify", "", "--model", str(tiny_bundle)])
    assert result.exit_code == 1 and "empty path" in result.stderr
    assert result.stderr.count("\n") == 1
    result = _invoke(["camera", "--source", "", "--model", str(tiny_bundle)])
    assert result.exit_code == 1 and "--source is empty" in result.stderr
    assert next(iter_inputs([""]))[1].startswith("empty path")


# ------------------------------------------------------------------ names in output
def test_control_characters_are_escaped_and_bad_utf8_stays_valid_json(tmp_path, tiny_bundle):
    folder = tmp_path / "in"
    folder.mkdir()
    colour_image(0).save(folder / "red\x1b[8m.png")
    colour_image(1).save(folder / "two\nlines.png")
    raw = os.fsencode(folder) + b"/caf\xe9.png"
    colour_image(2).save(raw.decode("utf-8", "surrogateescape"))
    text = _invoke(["classify", str(folder), "--model", str(tiny_bundle)])
    assert text.exit_code == 0
    assert "\x1b" not in text.stdout and "red\\x1b[8m.png:" in text.stdout
    assert "two\\nlines.png:" in text.stdout and len(text.stdout.splitlines()) == 3
    assert "caf\\xe9.png:" in text.stdout

    out = subprocess.run([sys.executable, "-m", "henet_edge.cli", "classify", str(folder),
                          "--model", str(tiny_bundle), "--json"], capture_output=True,
                         timeout=120, env={**os.environ,
                                           "PYTHONPATH": str(Path(__file__).parents[1])})
    lines = [json.loads(line.decode("utf-8")) for line in out.stdout.splitlines()]  # strict
    assert len(lines) == 3
    cafe = next(d for d in lines if "path_b64" in d)
    assert base64.b64decode(cafe["path_b64"]) == raw
    assert cafe["path"].endswith("caf\\xe9.png")


def test_printable_and_json_path():
    assert printable("a\tb\x7f\u0085\udce9") == "a\\tb\\x7f\\x85\\xe9"
    assert json_path("plain ü.png") == {"path": "plain ü.png"}


def test_labels_with_spaces_survive_every_parser(tmp_path, tiny_bundle):
    assert parse_labels("hot dog\nnot hot dog\n\n") == ["hot dog", "not hot dog"]
    (tmp_path / "labels.txt").write_text("hot dog\ncold dog\nwarm dog\n")
    classifier = Classifier(tiny_bundle / "model_int8.tflite", labels=tmp_path / "labels.txt")
    assert classifier.labels == ["hot dog", "cold dog", "warm dog"]


# ------------------------------------------------------------------ option bounds
@pytest.mark.parametrize("args, message", [
    (["bench", "BUNDLE", "--runs", "3000000000"], "--runs is at most"),
    (["classify", "x.png", "--model", "BUNDLE", "--threads", "100000"], "--threads"),
    (["profile", "--repeat", "1000"], "--repeat"),
    (["profile", "--width", "0"], "--width"),
])
def test_options_have_upper_bounds(tiny_bundle, args, message):
    result = _invoke([str(tiny_bundle) if a == "BUNDLE" else a for a in args])
    assert result.exit_code in (1, 2)
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_bench_plot_names_the_file_it_wrote(tiny_bundle, tmp_path):
    result = _invoke(["bench", str(tiny_bundle), "--runs", "3", "--repeats", "1", "--warmup",
                      "0", "--plot", str(tmp_path / "latency")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "latency.png").is_file()
    assert f"wrote {tmp_path / 'latency.png'}" in result.stderr


def test_bench_outputs_make_their_folders_and_latencies_are_named_json(tiny_bundle,
                                                                          tmp_path):
    """--latencies made missing folders but --plot refused them; lat.csv held JSON."""
    plot, latencies = tmp_path / "new" / "lat.png", tmp_path / "other" / "sub" / "lat.json"
    result = _invoke(["bench", str(tiny_bundle), "--runs", "3", "--repeats", "1", "--warmup",
                      "0", "--plot", str(plot), "--latencies", str(latencies)])
    assert result.exit_code == 0, result.output
    assert plot.read_bytes().startswith(b"\x89PNG")
    assert json.loads(latencies.read_text())["unit"] == "ns"
    result = _invoke(["bench", str(tiny_bundle), "--runs", "3", "--latencies",
                      str(tmp_path / "lat.csv")])
    assert result.exit_code == 1
    assert "lat.csv: the latencies are written as JSON; name the file .json" in result.stderr
    assert "repeat" not in result.output and not (tmp_path / "lat.csv").exists()


def _never(*_args, **_kwargs):
    raise AssertionError("the slow work ran before the plot's folder was checked")


@pytest.mark.parametrize("command, slow", [
    (["bench", "BUNDLE", "--runs", "3"], "henet_edge.device.bench.run_bench"),
    (["evaluate", "BUNDLE"], "henet_edge.convert.evaluate.load_evaluation_data"),
    (["compare", "--runs", "3"], "henet_edge.convert.compare.compare"),
    (["remote", "bench", "--host", "127.0.0.1", "--runs", "3"],
     "henet_edge.deploy.commands.bench"),
])
def test_a_plot_that_cannot_land_is_refused_before_the_slow_work(command, slow, tiny_bundle,
                                                                 tmp_path, monkeypatch):
    """bench --plot timed for minutes, then failed writing the PNG; so did the others."""
    monkeypatch.setattr(slow, _never)
    (tmp_path / "a-file").write_text("not a folder")
    args = [str(tiny_bundle) if a == "BUNDLE" else a for a in command]
    for target, reason in ((tmp_path / "a-file" / "out.png", "Not a directory"),
                           (tmp_path / "a-file" / "deeper" / "out.png", "Not a directory")):
        result = _invoke([*args, "--plot", str(target)])
        assert result.exit_code == 1, result.output
        assert f"{target}: cannot write the plot ({reason})" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


@pytest.mark.parametrize("bench_args, message", [
    (["--runs", "0"], "Invalid value for '--runs'"),
    (["--threads", "99"], "Invalid value for '--threads'"),
    (["--warmup", "x"], "'x' is not a valid integer"),
    (["--no-such-option"], "No such option '--no-such-option'"),
])
def test_remote_bench_checks_benchs_options_before_connecting(bench_args, message,
                                                              monkeypatch):
    """remote bench --runs 0 connected, installed nothing, and was refused by the device."""
    monkeypatch.setattr("henet_edge.deploy.commands.bench", _never)
    result = _invoke(["remote", "bench", "--host", "127.0.0.1", *bench_args])
    assert result.exit_code in (1, 2), result.output
    assert message in result.stderr


def test_a_bad_camera_index_names_the_source_it_was_given():
    from henet_edge.device.camera import CameraError, open_source

    for spec in ("opencv:x", "picamera2:x"):
        with pytest.raises(CameraError, match=f"like {spec[:-1]}0"):
            open_source(spec)
