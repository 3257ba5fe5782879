"""The device side never imports TensorFlow or Keras, even while it works."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import henet_edge.device

from .device_helpers import colour_image

DEVICE = Path(henet_edge.device.__file__).parent
FORBIDDEN = ("tensorflow", "keras", "tf_keras")

SCRIPT = r"""
import importlib, json, pkgutil, sys
import henet_edge.cli, henet_edge.device
for info in pkgutil.walk_packages(henet_edge.device.__path__, "henet_edge.device."):
    importlib.import_module(info.name)
from henet_edge.cli import main
bundle, image, folder, forbidden = sys.argv[1:5]
for args in (["classify", image, "--model", bundle, "--json"],
             ["camera", "--source", folder, "--frames", "1", "--model", bundle],
             ["bench", bundle, "--runs", "2", "--repeats", "1", "--warmup", "0", "--json"],
             ["doctor", "--model", bundle, "--json"]):
    try:
        main(args, standalone_mode=False)
    except SystemExit as exc:
        if exc.code:
            raise
loaded = sorted(m for m in sys.modules if m.split(".")[0] in forbidden.split(","))
print("LOADED=" + json.dumps(loaded))
"""


def test_device_commands_run_without_tensorflow_or_keras(tiny_bundle, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    colour_image(0).save(folder / "photo.png")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tiny_bundle),
                           str(folder / "photo.png"), str(folder), ",".join(FORBIDDEN)],
                          capture_output=True, text=True, timeout=300, env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("LOADED="))
    assert json.loads(line.removeprefix("LOADED=")) == []
    assert '"ok": true' in done.stdout  # the classify line really ran


def test_no_device_module_imports_tensorflow_or_keras_statically():
    offenders = []
    for path in sorted(DEVICE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.name}:{node.lineno} {n}" for n in names
                          if n.split(".")[0] in FORBIDDEN]
    assert offenders == []
