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

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
        sys.exit(f"the command failed (exit {done.returncode}):\n{done.stderr.strip()}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", type=Path, help="image to classify [a generated JPEG]")
    parser.add_argument("--model", help="bundle or .tflite [the installed bundle]")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each [5]")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    options = parser.parse_args()
    if options.repeats < 1:
        parser.error("--repeats must be at least 1")

    has_tf = importlib.util.find_spec("tensorflow") is not None
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}
    with tempfile.TemporaryDirectory() as tmp:
        image = options.image or _sample_image(Path(tmp))
        args = ["classify", str(image)]
        if options.model:
            args += ["--model", options.model]
        _time_once(PLAIN, args, env)  # fills the OS file cache; not counted
        plain, with_tf = [], []
        for _ in range(options.repeats):
            plain.append(_time_once(PLAIN, args, env))
            if has_tf:
                with_tf.append(_time_once(WITH_TF, args, env))

    result = {"image": str(options.image or "generated 640x480 JPEG"),
              "repeats": options.repeats, "python": sys.version.split()[0],
              "classify_s": statistics.median(plain), "classify_runs_s": plain,
              "with_tensorflow_s": statistics.median(with_tf) if with_tf else None,
              "with_tensorflow_runs_s": with_tf}
    result["ratio"] = (result["with_tensorflow_s"] / result["classify_s"]
                       if with_tf else None)
    if options.json:
        print(json.dumps(result, indent=1))
        return
    print(f"fresh-process `henet-edge classify` of one image, median of {options.repeats}:")
    print(f"  without TensorFlow:       {result['classify_s']:.3f} s")
    if with_tf:
        print(f"  with `import tensorflow`: {result['with_tensorflow_s']:.3f} s")
        print(f"  ratio:                    {result['ratio']:.1f}x")
    else:
        print("  with `import tensorflow`: not measured (tensorflow is not installed here)")


if __name__ == "__main__":
    main()
