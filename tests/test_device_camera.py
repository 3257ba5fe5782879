"""``henet-edge camera``: frame sources, colour order and the frame loop."""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from henet_edge.cli import main
from henet_edge.device.camera import (
    BadFrame,
    CameraError,
    FolderSource,
    bgr_to_rgb,
    open_source,
    run,
)
from henet_edge.device.classify import Classifier

from .conftest import skip_unless_ci
from .device_helpers import colour_pixels, structured_image

HAS_CV2 = importlib.util.find_spec("cv2") is not None


@pytest.fixture(scope="module")
def classifier(tiny_bundle) -> Classifier:
    return Classifier(tiny_bundle, top_k=3)


def test_bgr_to_rgb_handles_bgr_bgrx_and_gray():
    rgb = np.asarray(structured_image(1), dtype=np.uint8)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    np.testing.assert_array_equal(bgr_to_rgb(bgr), rgb)
    bgrx = np.concatenate([bgr, np.full((*rgb.shape[:2], 1), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(bgr_to_rgb(bgrx), rgb)  # picamera2 XRGB8888: B, G, R, X
    gray = rgb[..., 0]
    np.testing.assert_array_equal(bgr_to_rgb(gray), np.stack([gray] * 3, axis=2))
    with pytest.raises(CameraError, match="unexpected frame shape"):
        bgr_to_rgb(np.zeros((4, 4, 2), np.uint8))


@pytest.mark.parametrize("channel", [0, 2])  # a red-dominant and a blue-dominant image
def test_known_colour_gives_the_same_prediction_through_every_source(classifier, tmp_path,
                                                                     channel):
    rgb = colour_pixels(channel, seed=7, size=(64, 48))
    folder = tmp_path / "frames"
    folder.mkdir()
    Image.fromarray(rgb).save(folder / "frame.png")

    via_file = classifier.classify_file(folder / "frame.png")
    with FolderSource(folder) as source:
        via_folder = classifier.classify_rgb(source.read())
    bgr = np.ascontiguousarray(rgb[..., ::-1])  # what OpenCV and picamera2 RGB888 deliver
    via_bgr = classifier.classify_rgb(bgr_to_rgb(bgr))
    bgrx = np.dstack([bgr, np.zeros(rgb.shape[:2], np.uint8)])
    via_bgrx = classifier.classify_rgb(bgr_to_rgb(bgrx))

    assert via_folder.logits == via_file.logits == via_bgr.logits == via_bgrx.logits
    # without the conversion red and blue swap, and the model sees another image
    assert not np.array_equal(classifier.prepare(Image.fromarray(bgr)),
                              classifier.prepare(Image.fromarray(rgb)))
    assert classifier.classify_rgb(bgr).logits != via_folder.logits


@skip_unless_ci(None if HAS_CV2 else "OpenCV not installed (dev extra)")
def test_video_file_source_matches_the_folder(classifier, tmp_path):
    import cv2

    rgb = colour_pixels(0, seed=3, size=(64, 48))
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    for _ in range(3):
        writer.write(np.ascontiguousarray(rgb[..., ::-1]))
    writer.release()
    with open_source(str(path)) as source:
        frame = source.read()
    red, green, blue = frame.reshape(-1, 3).mean(axis=0)
    assert red > 120 > max(green, blue)  # came back in RGB order (MJPG is lossy)
    with open_source(str(path)) as source:
        results = list(run(classifier, source))
    assert [r.frame for r in results] == [1, 2, 3]


def test_frame_loop_counts_times_and_stops(classifier, tmp_path):
    for i in range(4):
        Image.fromarray(colour_pixels(i % 3, seed=i)).save(tmp_path / f"{i}.png")
    with open_source(str(tmp_path)) as source:
        results = list(run(classifier, source, frames=3))
    assert [r.frame for r in results] == [1, 2, 3]
    for r in results:
        assert set(r.timings_ms) == {"capture", "preprocess", "invoke", "post"}
        assert r.fps > 0
        assert r.label in classifier.labels
    with open_source(str(tmp_path)) as source:
        assert len(list(run(classifier, source))) == 4  # the folder ends the stream


def test_every_spaces_frames(classifier, tmp_path):
    for i in range(3):
        Image.fromarray(colour_pixels(0, seed=i)).save(tmp_path / f"{i}.png")
    now = [0.0]
    waits = []

    def clock():
        now[0] += 0.001
        return now[0]

    def sleep(seconds):
        waits.append(seconds)
        now[0] += seconds

    with open_source(str(tmp_path)) as source:
        results = list(run(classifier, source, frames=3, every=0.5, clock=clock, sleep=sleep))
    assert len(results) == 3
    assert len(waits) == 2  # no wait after the last frame
    assert all(0 < w <= 0.5 for w in waits)


def test_fps_counts_frame_intervals_not_frames_over_the_last_frame_end(classifier, tmp_path):
    """Five frames started 0.2 s apart run at 5 fps, not 5 / 0.8 s = 6.2."""
    for i in range(5):
        Image.fromarray(colour_pixels(0, seed=i)).save(tmp_path / f"{i}.png")
    now = [0.0]

    def clock():
        now[0] += 0.0001
        return now[0]

    def sleep(seconds):
        now[0] += seconds

    with open_source(str(tmp_path)) as source:
        results = list(run(classifier, source, frames=5, every=0.2, clock=clock, sleep=sleep))
    assert len(results) == 5
    assert results[-1].fps == pytest.approx(5.0, rel=0.01)


def test_a_source_that_disappears_mid_run(classifier, tmp_path):
    folder = tmp_path / "cam"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(colour_pixels(1, seed=i)).save(folder / f"{i}.png")
    seen, bad = [], []
    with open_source(str(folder)) as source:
        for result in run(classifier, source, on_bad_frame=bad.append):
            seen.append(result.frame)
            for png in folder.glob("*.png"):
                png.unlink()
    assert seen == [1]
    assert len(bad) == 2 and "1.png" in bad[0] and "No such file" in bad[0]
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "0.png").write_bytes(b"not a png")
    with open_source(str(broken)) as source, pytest.raises(BadFrame, match=r"0\.png"):
        list(run(classifier, source))  # without a handler a bad frame stops the run


def test_a_bad_frame_is_reported_and_skipped_and_frames_counts_good_ones(tmp_path,
                                                                         tiny_bundle):
    for i in range(4):
        Image.fromarray(colour_pixels(i % 3, seed=i)).save(tmp_path / f"{i}.png")
    (tmp_path / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    result = CliRunner().invoke(main, ["camera", "--source", str(tmp_path), "--frames", "3",
                                       "--json", "--model", str(tiny_bundle)])
    assert "Traceback" not in result.output
    frames = [json.loads(line) for line in result.stdout.splitlines()]
    assert [f["frame"] for f in frames] == [1, 2, 3]  # 0.png, 2.png, 3.png
    assert "skipped" in result.stderr and "1.png" in result.stderr
    assert "3 frames" in result.stderr and "1 bad frames skipped" in result.stderr
    assert result.exit_code == 1


def test_a_source_that_runs_out_says_so_and_a_frames_limit_does_not(tmp_path, tiny_bundle):
    """A folder of 3 images with --frames 10 printed "3 frames" as if all was done."""
    for i in range(3):
        Image.fromarray(colour_pixels(i, seed=i)).save(tmp_path / f"{i}.png")
    said = {}
    for frames in ("10", "0", "2"):
        result = CliRunner().invoke(main, ["camera", "--source", str(tmp_path), "--frames",
                                           frames, "--model", str(tiny_bundle)])
        assert result.exit_code == 0, result.output
        said[frames] = result.stderr.splitlines()[-1]
    assert said["10"].startswith("3 frames, ")
    assert said["10"].endswith(f"; {tmp_path} has no more frames (--frames asked 10)")
    assert said["0"].startswith("3 frames, ") and said["0"].endswith("has no more frames")
    assert said["2"].startswith("2 frames, ") and "no more frames" not in said["2"]


@skip_unless_ci(None if HAS_CV2 else "OpenCV not installed (dev extra)")
def test_a_corrupt_video_with_no_frames_fails(tmp_path, tiny_bundle):
    import cv2

    good = tmp_path / "good.avi"
    writer = cv2.VideoWriter(str(good), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    for i in range(3):
        writer.write(colour_pixels(i, seed=i, size=(64, 48)))
    writer.release()
    data = good.read_bytes()
    corrupt = tmp_path / "corrupt.avi"
    movi = data.find(b"movi") + 4
    corrupt.write_bytes(data[:movi] + bytes(len(data) - movi))  # header kept, frames zeroed
    result = CliRunner().invoke(main, ["camera", "--source", str(corrupt),
                                       "--model", str(tiny_bundle)])
    assert "Traceback" not in result.output
    assert result.exit_code == 1, result.output
    assert "no frame could be decoded" in result.stderr


def test_empty_and_fifo_sources_are_refused(tmp_path, tiny_bundle):
    with pytest.raises(CameraError, match="empty"):
        open_source("")
    fifo = tmp_path / "clip.mp4"
    os.mkfifo(fifo)
    with pytest.raises(CameraError, match="FIFO"):
        open_source(str(fifo))
    frames = tmp_path / "frames"
    frames.mkdir()
    Image.fromarray(colour_pixels(0)).save(frames / "0.png")
    os.mkfifo(frames / "1.png")
    result = CliRunner().invoke(main, ["camera", "--source", str(frames), "--json",
                                       "--model", str(tiny_bundle)])
    assert [json.loads(line)["frame"] for line in result.stdout.splitlines()] == [1]
    assert "1.png" in result.stderr and "FIFO" in result.stderr
    assert result.exit_code == 1


def test_bad_sources(tmp_path):
    with pytest.raises(CameraError, match="unknown source"):
        open_source(str(tmp_path / "nothing-here"))
    with pytest.raises(CameraError, match=r"clip\.mp4: no such file"):
        open_source(str(tmp_path / "clip.mp4"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CameraError, match="no JPEG"):
        open_source(str(tmp_path / "empty"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(CameraError, match="not a video"):
        open_source(str(tmp_path / "notes.txt"))
    with pytest.raises(CameraError, match="bad camera index"):
        open_source("opencv:front")


def test_missing_opencv_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # as if not installed: import fails
    with pytest.raises(CameraError, match="pip install opencv-python-headless"):
        open_source("opencv:0")
    (tmp_path / "clip.mp4").write_bytes(b"\x00" * 64)
    with pytest.raises(CameraError, match="opencv-python-headless"):
        open_source(str(tmp_path / "clip.mp4"))


def test_missing_picamera2_names_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)
    with pytest.raises(CameraError, match="apt install python3-picamera2") as info:
        open_source("picamera2")
    assert "--system-site-packages" in str(info.value)


def test_auto_without_any_camera_names_both_fixes(classifier, tmp_path, monkeypatch):
    for name in ("cv2", "picamera2"):  # neither installed
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(CameraError, match="no camera found") as info:
        open_source("auto")
    assert "python3-picamera2" in str(info.value)
    assert "opencv-python-headless" in str(info.value)


def test_cli_camera_folder_json(tmp_path, tiny_bundle):
    for i in range(3):
        Image.fromarray(colour_pixels(i, seed=i)).save(tmp_path / f"{i}.png")
    result = CliRunner().invoke(main, ["camera", "--source", str(tmp_path), "--frames", "2",
                                       "--json", "--model", str(tiny_bundle)])
    assert result.exit_code == 0, result.output
    frames = [json.loads(line) for line in result.stdout.splitlines()]
    assert [f["frame"] for f in frames] == [1, 2]
    assert {f["label"] for f in frames} <= {"red", "green", "blue"}
    assert all(set(f["timings_ms"]) == {"capture", "preprocess", "invoke", "post"}
               for f in frames)
    assert "2 frames" in result.stderr


def test_cli_camera_errors_are_one_line(tmp_path, tiny_bundle):
    result = CliRunner().invoke(main, ["camera", "--source", str(tmp_path / "none"),
                                       "--model", str(tiny_bundle)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "unknown source" in result.stderr
    Image.fromarray(colour_pixels(0)).save(tmp_path / "0.png")
    for option, value in (("--frames", "-1"), ("--every", "inf"), ("--every", "nan"),
                          ("--every", "-1"), ("--threads", "0")):
        # refused as a command line (exit 2), before the model or the source is opened
        result = CliRunner().invoke(main, ["camera", "--source", str(tmp_path / "none"),
                                           option, value, "--model", str(tmp_path / "none")])
        assert result.exit_code == 2, (option, value, result.output)
        assert f"'{option}'" in result.stderr and "Traceback" not in result.output
