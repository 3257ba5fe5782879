"""The benchmark scripts refuse a bad command line in one line, before doing any work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = "henet_edge/device/assets/default_bundle"


@pytest.mark.parametrize("script, args, option", [
    ("cold_start.py", ["--repeats", "0"], "--repeats"),
    ("cold_start.py", ["--model", "no/such/bundle"], "--model"),
    ("deploy_faults.py", ["--kills", "-1"], "--kills"),
    ("henet_bounds.py", ["--runs", "0"], "--runs"),
    ("hostile_inputs.py", ["--timeout", "0"], "--timeout"),
    ("int8_kernels.py", ["--repeats", "0"], "--repeats"),
    ("serve_load.py", ["--model", BUNDLE, "--http", "spdy"], "--http"),
    ("serve_load.py", ["--model", BUNDLE, "--requests", "3", "--clients", "8"], "--requests"),
    ("train_speed.py", ["--rounds", "0"], "--rounds"),
])
def test_a_bad_option_is_one_line_and_no_traceback(script, args, option):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and option in errors[0], done.stderr
    assert done.stdout == ""
