"""Cold start of ``henet-edge classify``: a fresh process, with and without TensorFlow.

Times a fresh Python process running ``henet-edge classify IMAGE`` and the
same process with ``import tensorflow`` added before it, interleaved
(plain, tensorflow, plain, ...) so both see the same machine state, and
prints both medians and their ratio. On a device without TensorFlow only the
plain time is reported.

Usage::

    python benchmarks/cold_start.py [--image photo.jpg] [--model BUNDLE] [--repeats 5]

Without ``--image`` a temporary JPEG is written; without ``--model`` the
installed (or shipped default) bundle is used, as ``classify`` does.
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from henet_edge import HenetEdgeError  # noqa: E402
from henet_edge.cli.base import script_help, user_errors  # noqa: E402

PLAIN = "from henet_edge.cli import main; main(prog_name='henet-edge')"
WITH_TF = "import tensorflow; " + PLAIN


def _sample_image(folder: Path) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).resize((640, 480), Image.Resampling.BILINEAR)
    path = folder / "photo.jpg"
    image.save(path, quality=90)
    return path


def _time_once(code: str, args: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, check=False)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        detail = done.stderr.strip().removeprefix("Error: ")
        raise HenetEdgeError(f"the command failed (exit {done.returncode}): {detail}")
    return elapsed


@click.command(help=script_help(__doc__))
@click.option("--image", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Image to classify [a generated 640x480 JPEG].")
@click.option("--model", type=click.Path(exists=True, path_type=Path), default=None,
              help="Bundle or .tflite to classify with [the installed bundle, else the "
                   "shipped default, as classify does].")
@click.option("--repeats", type=click.IntRange(1), default=5, show_default=True,
              help="Timed runs of each way (after one uncounted run).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@user_errors
def main(image: Path | None, model: Path | None, repeats: int, as_json: bool) -> None:
    has_tf = importlib.util.find_spec("tensorflow") is not None
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}
    with tempfile.TemporaryDirectory() as tmp:
        args = ["classify", str(image or _sample_image(Path(tmp)))]
        if model:
            args += ["--model", str(model)]
        _time_once(PLAIN, args, env)  # fills the OS file cache; not counted
        plain, with_tf = [], []
        for _ in range(repeats):
            plain.append(_time_once(PLAIN, args, env))
            if has_tf:
                with_tf.append(_time_once(WITH_TF, args, env))

    result = {"image": str(image or "generated 640x480 JPEG"),
              "repeats": repeats, "python": sys.version.split()[0],
              "classify_s": statistics.median(plain), "classify_runs_s": plain,
              "with_tensorflow_s": statistics.median(with_tf) if with_tf else None,
              "with_tensorflow_runs_s": with_tf}
    result["ratio"] = (result["with_tensorflow_s"] / result["classify_s"]
                       if with_tf else None)
    if as_json:
        print(json.dumps(result, indent=1))
        return
    print(f"fresh-process `henet-edge classify` of one image, median of {repeats}:")
    print(f"  without TensorFlow:       {result['classify_s']:.3f} s")
    if with_tf:
        print(f"  with `import tensorflow`: {result['with_tensorflow_s']:.3f} s")
        print(f"  ratio:                    {result['ratio']:.1f}x")
    else:
        print("  with `import tensorflow`: not measured (tensorflow is not installed here)")


if __name__ == "__main__":
    main()
