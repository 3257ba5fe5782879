"""Hostile inputs for the device commands: a corpus of unusual and broken files, run for real.

Builds, in a temporary folder, images that are thin, near the size limits,
16-bit, RGBA, palette, CMYK, forged, truncated, empty, bombs, FIFOs, devices,
folder loops, 1,000-deep folders and names with control characters or
invalid UTF-8 (and, with ``--bundles``, damaged copies of a bundle). Runs
the real ``henet-edge`` commands on them as subprocesses with a timeout,
and prints, for every input tried: tracebacks, hangs, wrong exit codes,
invalid JSON lines (strict UTF-8, no lone surrogates) and each image's
peak RSS, then the totals and the worst image's peak. It exits 1 when it found any
traceback, hang, wrong exit code or invalid JSON line.

    python benchmarks/hostile_inputs.py [--model BUNDLE] [--bundles] [--timeout 60]
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np
from PIL import Image, PngImagePlugin

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from henet_edge import HenetEdgeError  # noqa: E402
from henet_edge.cli.base import script_help, user_errors  # noqa: E402
from tests.device_helpers import png_header  # noqa: E402

DEFAULT_BUNDLE = ROOT / "henet_edge" / "device" / "assets" / "default_bundle"


# ------------------------------------------------------------------ the corpus
def _photo(size: tuple[int, int], seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = size
    blocks = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    pixels = np.kron(blocks, np.ones((h // 8 + 1, w // 8 + 1, 1), np.uint8))[:h, :w]
    return Image.fromarray(pixels)


def _bytes_of(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def build_images(folder: Path) -> dict[str, int]:
    """Write the image corpus; returns {file name: expected exit code of `classify FILE`}."""
    expect: dict[str, int] = {}

    def ok(name: str) -> Path:
        expect[name] = 0
        return folder / name

    def bad(name: str) -> Path:
        expect[name] = 1
        return folder / name

    _photo((64, 48)).save(ok("good.png"))
    _photo((640, 480), 1).save(ok("good.jpg"), quality=90)
    for width in (200_000, 2_000_000):  # thin strips: cheap to decode, once scaled up a bomb
        row = np.zeros((1, width, 3), np.uint8)
        row[0, :, 0] = 200
        Image.fromarray(row).save(ok(f"thin_{width}x1.png"), optimize=True)
        Image.fromarray(row.transpose(1, 0, 2).copy()).save(ok(f"thin_1x{width}.png"),
                                                            optimize=True)
    Image.fromarray(np.zeros((8000, 7999), np.uint16)).save(bad("deep16_7999x8000.png"))
    Image.new("RGBA", (7999, 8000), (0, 0, 255, 128)).save(bad("rgba_7999x8000.png"))
    Image.new("L", (8000, 7999), 90).save(ok("gray_8000x7999.png"))
    Image.new("P", (7999, 8000), 3).save(ok("palette_7999x8000.png"))
    Image.new("RGB", (4000, 4000), (20, 40, 60)).save(ok("rgb_4000x4000.png"))
    _photo((8000, 8000), 2).save(ok("photo_8000x8000.jpg"), quality=40)
    jpeg = bytearray(_bytes_of(_photo((200, 200), 3), "JPEG"))
    sof = jpeg.find(b"\xff\xc0")
    jpeg[sof + 5:sof + 9] = struct.pack(">HH", 8000, 7999)
    bad("forged_7999x8000.jpg").write_bytes(bytes(jpeg))
    png_header(bad("bomb_9000x9000.png"), 9000, 9000)
    png_header(bad("bomb_20000x20000.png"), 20000, 20000)
    png_header(bad("zero_width.png"), 0, 10)
    whole = _bytes_of(_photo((300, 200), 4), "PNG")
    bad("truncated.png").write_bytes(whole[: len(whole) // 2])
    whole = _bytes_of(_photo((300, 200), 5), "JPEG")
    bad("truncated.jpg").write_bytes(whole[: len(whole) // 2])
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "x" * 5000)
    whole = _bytes_of(Image.new("RGB", (8, 8)), "PNG", pnginfo=info)
    bad("truncated_header.png").write_bytes(whole[: whole.find(b"tEXt") + 100])
    bmp = bytearray(_bytes_of(Image.new("RGB", (5, 5)), "BMP"))
    bmp[18:22] = struct.pack("<i", -5)
    bad("negative_width.bmp").write_bytes(bytes(bmp))
    bad("empty.jpg").write_bytes(b"")
    bad("noise.jpg").write_bytes(np.random.default_rng(6).bytes(4000))
    bad("notes.txt").write_text("not a picture\n")
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010E] = "hello"
    _photo((64, 48), 7).save(ok("corrupt_exif.jpg"), exif=exif.tobytes()[:-3])
    _photo((64, 48), 8).save(ok("rotated.jpg"), exif=exif.tobytes())
    _photo((64, 48), 9).convert("CMYK").save(ok("cmyk.jpg"))
    _photo((64, 48), 10).save(ok("lossless.webp"), lossless=True)
    Image.new("RGB", (1, 1), (255, 0, 0)).save(ok("dot.png"))
    _photo((64, 48), 11).save(ok("esc\x1b[8mhidden.png"))
    _photo((64, 48), 12).save(ok("two\nlines.png"))
    raw = os.fsencode(folder) + b"/caf\xe9.png"
    _photo((64, 48), 13).save(raw.decode("utf-8", "surrogateescape"))
    expect[(b"caf\xe9.png").decode("utf-8", "surrogateescape")] = 0
    os.mkfifo(bad("fifo.jpg"))
    bad("folder.jpg").mkdir()
    (folder / "dangling.jpg").symlink_to(folder / "gone.jpg")
    expect["dangling.jpg"] = 1
    locked = bad("locked.png")
    _photo((64, 48), 14).save(locked)
    locked.chmod(0)
    if os.geteuid() == 0:
        expect["locked.png"] = 0  # root reads mode-000 files anyway
    return expect


def build_folders(root: Path) -> dict[str, tuple[Path, int]]:
    """Folder inputs: {name: (folder, expected exit code of `classify FOLDER`)}."""
    deep = root / "deep"
    deep.mkdir()
    path = deep
    for _ in range(1000):
        path = path / "d"
        path.mkdir()
    _photo((64, 48)).save(path / "bottom.png")
    loop = root / "loop"
    loop.mkdir()
    _photo((64, 48)).save(loop / "a.png")
    (loop / "x.jpg").symlink_to(".")
    (loop / "sub").mkdir()
    (loop / "sub" / "up").symlink_to("..")
    fifos = root / "fifos"
    fifos.mkdir()
    _photo((64, 48)).save(fifos / "a.png")
    os.mkfifo(fifos / "b.png")
    frames = root / "frames"
    frames.mkdir()
    for i in range(4):
        _photo((64, 48), i).save(frames / f"{i}.png")
    (frames / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return {"deep (1000 levels)": (deep, 0), "loop (x.jpg -> ., sub/up -> ..)": (loop, 1),
            "fifo in folder": (fifos, 1), "frames with a bad one": (frames, 1)}


def build_bundles(source: Path, root: Path) -> dict[str, Path]:
    """Damaged copies of ``source``: {what was damaged: bundle folder}."""
    out = {}

    def copy(name: str) -> tuple[Path, dict]:
        dest = Path(shutil.copytree(source, root / name))
        return dest, json.loads((dest / "manifest.json").read_text())

    def write(dest: Path, manifest) -> None:
        (dest / "manifest.json").write_text(manifest if isinstance(manifest, str)
                                            else json.dumps(manifest))

    dest, m = copy("flipped_byte")
    model = dest / m["models"]["int8"]["file"]
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    out["a flipped byte in the int8 model"] = dest
    damages = {
        "top-level array": "[1, 2, 3]",
        "files as a list": lambda m: {**m, "files": list(m["files"])},
        "models as {}": lambda m: {**m, "models": {}},
        "models as a string": lambda m: {**m, "models": "int8"},
        "input_shape 5": lambda m: {**m, "input_shape": 5},
        "preprocessing a string": lambda m: {**m, "preprocessing": "v1"},
        "canonical_size 0": lambda m: {**m, "preprocessing": {**m["preprocessing"],
                                                               "canonical_size": 0}},
        "two-value mean": lambda m: {**m, "preprocessing": {**m["preprocessing"],
                                                             "mean": [0.5, 0.5]}},
        "std of zeros": lambda m: {**m, "preprocessing": {**m["preprocessing"],
                                                           "std": [0, 0, 0]}},
        "model file absolute": lambda m: {**m, "models": {**m["models"], "int8": {
            **m["models"]["int8"], "file": "/etc/passwd"}}},
        "model file ../": lambda m: {**m, "models": {**m["models"], "int8": {
            **m["models"]["int8"], "file": "../elsewhere.tflite"}}},
        "100,000-deep nesting": "[" * 100_000 + "]" * 100_000,
        "not JSON": "{manifest",
    }
    for i, (what, change) in enumerate(damages.items()):
        dest, m = copy(f"damage{i}")
        write(dest, change if isinstance(change, str) else change(m))
        out[what] = dest
    return out


def _remove(tmp: Path) -> None:
    """Remove the corpus; the 1,000-deep folder bottom up (rmtree would recurse)."""
    locked = tmp / "images" / "locked.png"
    if locked.exists():
        locked.chmod(0o600)
    levels = [tmp / "deep"]
    while (levels[-1] / "d").is_dir():
        levels.append(levels[-1] / "d")
    if levels[-1].is_dir():
        for entry in levels[-1].iterdir():
            entry.unlink()
        for level in reversed(levels):
            level.rmdir()
    shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------ running
@dataclass
class Outcome:
    what: str
    code: int | None
    expected: int | None
    seconds: float
    peak_mb: float
    traceback: bool
    hung: bool
    bad_json: int
    problems: list[str] = field(default_factory=list)


# The command runs in a child that writes its own peak RSS when it exits. VmHWM is the
# high-water mark of the process's own memory since exec (ru_maxrss would include the
# parent's memory at fork time, which Linux carries across exec).
LAUNCHER = """
import atexit, os, sys
def _peak():
    with open("/proc/self/status") as f:
        kb = next(line.split()[1] for line in f if line.startswith("VmHWM:"))
    with open(os.environ["HOSTILE_PEAK_FILE"], "w") as f:
        f.write(kb)
atexit.register(_peak)
sys.argv[0] = "henet-edge"
from henet_edge.cli import main
main()
"""


def run_command(args: list[str], timeout: float) -> tuple:
    """(exit code or None if it hung, stdout, stderr, seconds, peak RSS in MB)."""
    peak_file = Path(tempfile.mkstemp(prefix="henet-peak-")[1])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "default",
           "HOSTILE_PEAK_FILE": str(peak_file)}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, *args], stdout=out,
                                stderr=err, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = None
        seconds = time.monotonic() - t0
        out.seek(0)
        err.seek(0)
        text = peak_file.read_text().strip()
        peak_file.unlink()
        return code, out.read(), err.read(), seconds, int(text) / 1000 if text else 0.0


def _strict(text: bytes) -> bool:
    """Whether ``text`` is strict JSON in valid UTF-8 (lone surrogates count as invalid)."""
    try:
        json.dumps(json.loads(text.decode("utf-8")), ensure_ascii=False).encode("utf-8")
    except (UnicodeError, ValueError):
        return False
    return True


def bad_json(stdout: bytes, mode: str) -> int:
    """Invalid JSON: lines of JSON Lines output (``lines``), or the whole ``document``."""
    if mode == "document":
        return 0 if not stdout.strip() or _strict(stdout) else 1
    return sum(not _strict(line) for line in stdout.splitlines())


def attempt(what: str, args: list[str], expected: int | None, timeout: float,
            json_mode: str | bool = False) -> Outcome:
    code, stdout, stderr, seconds, peak = run_command(args, timeout)
    mode = "lines" if json_mode is True else json_mode
    outcome = Outcome(what, code, expected, seconds, peak, b"Traceback" in stderr,
                      code is None, bad_json(stdout, mode) if mode else 0)
    if outcome.traceback:
        last = stderr.decode("utf-8", "replace").strip().splitlines()[-1]
        outcome.problems.append(f"traceback: {last[:120]}")
    if outcome.hung:
        outcome.problems.append(f"hung (killed after {timeout:.0f} s)")
    elif expected is not None and code != expected:
        first = stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        outcome.problems.append(f"exit {code}, expected {expected}: {first[0][:120]}")
    if outcome.bad_json:
        outcome.problems.append(f"{outcome.bad_json} invalid JSON")
    return outcome


@click.command(help=script_help(__doc__))
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False,
                                                      path_type=Path),
              default=DEFAULT_BUNDLE, show_default="the shipped default bundle",
              help="Bundle folder every command runs with (and --bundles damages copies of).")
@click.option("--timeout", type=click.FloatRange(0, min_open=True), default=60.0,
              show_default=True, help="Seconds each command may run before it counts as hung.")
@click.option("--bundles", is_flag=True, help="Also run the commands on damaged bundles.")
@click.option("--keep", is_flag=True, help="Keep the corpus folder.")
@user_errors
def main(model_dir: Path, timeout: float, bundles: bool, keep: bool) -> None:
    model = str(model_dir)
    tmp = Path(tempfile.mkdtemp(prefix="henet-hostile-"))
    outcomes: list[Outcome] = []
    image_runs: list[Outcome] = []
    try:
        images = tmp / "images"
        images.mkdir()
        print(f"building the corpus in {tmp} ...", flush=True)
        expect = build_images(images)
        folders = build_folders(tmp)
        print(f"{len(expect)} image files, {len(folders)} folders; classifying each "
              f"(timeout {timeout:.0f} s)", flush=True)
        for name, code in sorted(expect.items()):
            o = attempt(f"classify {name!a}", ["classify", str(images / name), "--model",
                                                    model, "--json"], code, timeout, True)
            outcomes.append(o)
            image_runs.append(o)
        text = attempt("classify images/ (text)", ["classify", str(images), "--model", model],
                       1, timeout)
        outcomes.append(text)
        for name, (folder, code) in folders.items():
            outcomes.append(attempt(f"classify {name}", ["classify", str(folder), "--model",
                                                         model, "--json"], code, timeout,
                                    True))
        frames = folders["frames with a bad one"][0]
        outcomes += [
            attempt("classify ''", ["classify", "", "--model", model], 1, timeout),
            attempt("camera --source ''", ["camera", "--source", "", "--model", model], 1,
                    timeout),
            attempt("camera --source frames --frames 3", [
                "camera", "--source", str(frames), "--frames", "3", "--json", "--model",
                model], 1, timeout, True),
            attempt("camera --source fifo.jpg", ["camera", "--source", str(images / "fifo.jpg"),
                                                 "--model", model], 1, timeout),
            attempt("camera --source fifos/", ["camera", "--source",
                                               str(folders["fifo in folder"][0]), "--model",
                                               model, "--json"], 1, timeout, True),
            attempt("bench --image fifo.jpg", ["bench", model, "--image",
                                               str(images / "fifo.jpg"), "--runs", "2",
                                               "--repeats", "1"], 1, timeout),
            attempt("bench --image thin_2000000x1.png", [
                "bench", model, "--image", str(images / "thin_2000000x1.png"), "--runs", "2",
                "--repeats", "1", "--warmup", "0", "--json"], 0, timeout, "document"),
            attempt("bench --runs 3000000000", ["bench", model, "--runs", "3000000000"], 1,
                    timeout),
            attempt("classify --threads 100000", ["classify", str(images / "good.png"),
                                                  "--model", model, "--threads", "100000"],
                    2, timeout),
            attempt("profile --repeat 1000", ["profile", "--repeat", "1000"], 2, timeout),
            attempt("profile --width 0", ["profile", "--width", "0"], 2, timeout),
            attempt("evaluate BUNDLE --data images/", ["evaluate", model, "--data",
                                                       str(images)], 1, timeout),
        ]
        if bundles:
            damaged = build_bundles(model_dir, tmp / "bundles")
            good = str(images / "good.png")
            for what, bundle in damaged.items():
                for command in (["classify", good, "--model", str(bundle), "--json"],
                                ["bench", str(bundle), "--runs", "2", "--repeats", "1"],
                                ["camera", "--source", str(frames), "--model", str(bundle)],
                                ["doctor", "--model", str(bundle)],
                                ["evaluate", str(bundle)]):
                    outcomes.append(attempt(f"{command[0]} on bundle: {what}", command, 1,
                                            timeout, "--json" in command))
    finally:
        if keep:
            print(f"corpus kept in {tmp}")
        else:
            _remove(tmp)

    for o in outcomes:
        status = "; ".join(o.problems) if o.problems else "ok"
        print(f"{o.what[:60]:<60} exit {o.code!s:>4}  {o.seconds:5.1f} s  "
              f"{o.peak_mb:6.0f} MB  {status}")
    worst = max(image_runs, key=lambda o: o.peak_mb)
    baseline = next(o for o in image_runs if o.what == "classify 'good.png'")
    print()
    print(f"inputs tried:        {len(outcomes)} commands ({len(image_runs)} single images)")
    wrong = sum(1 for o in outcomes
                if not o.hung and o.expected is not None and o.code != o.expected)
    found = {"tracebacks": sum(o.traceback for o in outcomes),
             "hangs": sum(o.hung for o in outcomes), "wrong exit codes": wrong,
             "invalid JSON lines": sum(o.bad_json for o in outcomes)}
    for name, count in found.items():
        print(f"{name + ':':<21}{count}")
    print(f"peak RSS, worst image: {worst.peak_mb:.0f} MB ({worst.what}); a 64x48 PNG: "
          f"{baseline.peak_mb:.0f} MB")
    if any(found.values()):  # for scripts and CI: a defect found is a failed run
        raise HenetEdgeError(", ".join(f"{count} {name}" for name, count in found.items()
                                       if count))


if __name__ == "__main__":
    main()
