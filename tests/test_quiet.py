"""Desktop commands are quiet by default and refuse bad input before importing TensorFlow."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_REPORT_TF = ("import sys\nfrom henet_edge.cli import main\n"
              "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n"
              "    print('tensorflow imported:', 'tensorflow' in sys.modules, file=sys.stderr)\n"
              "    raise\n")


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-c", _REPORT_TF, *args], capture_output=True,
                          text=True, env=env)


def test_tensorflow_logs_are_hidden_unless_verbose():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    quiet = _cli("profile", "--no-layers", "--repeat", "1", env=env)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == "tensorflow imported: True\n"  # nothing else on stderr
    assert "trainable params" in quiet.stdout
    loud = _cli("profile", "--no-layers", "--repeat", "1", "--verbose", env=env)
    assert loud.returncode == 0
    assert "oneDNN" in loud.stderr or "absl" in loud.stderr


@pytest.mark.parametrize("args, message", [
    (["train", "--resume", "runs/missing"], "not a run folder"),
    (["train", "--out", "r"], "--data is required"),
    (["evaluate", "nothing-here"], "no such model"),
    (["convert", "x", "--calibration", "c", "--out", "."], "is not a bundle"),
])
def test_cheap_checks_come_before_tensorflow(tmp_path, args, message):
    proc = subprocess.run([sys.executable, "-c", _REPORT_TF, *args], capture_output=True,
                          text=True, cwd=tmp_path if args[0] != "convert" else os.getcwd())
    assert proc.returncode == 1
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.endswith("tensorflow imported: False\n")
