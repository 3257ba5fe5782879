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
    ("equal_budget.py", ["report", "--root", "no/such/campaign", "--core", "9999"], "--core"),
    ("henet_bounds.py", ["--runs", "0"], "--runs"),
    ("hostile_inputs.py", ["--timeout", "0"], "--timeout"),
    ("int8_kernels.py", ["--repeats", "0"], "--repeats"),
    ("serve_load.py", ["--model", BUNDLE, "--http", "spdy"], "--http"),
    ("serve_load.py", ["--model", BUNDLE, "--requests", "3", "--clients", "8"], "--requests"),
    ("train_speed.py", ["--rounds", "0"], "--rounds"),
    ("weight_soup.py", ["training/henet-r3-kd2-t1", "--out", "soup.bin"], "--out"),
])
def test_a_bad_option_is_one_line_and_no_traceback(script, args, option):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and option in errors[0], done.stderr
    assert done.stdout == ""


def test_the_load_test_counts_only_classified_requests():
    # 12 clients against a queue of 1: most requests are refused (503), and a refusal,
    # answered at once, must not count as a fast classification.
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "serve_load.py"),
                           "--model", BUNDLE, "--clients", "12", "--requests", "48",
                           "--queue", "1", "--http", "h11"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    said = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    classified = int(said["requests"].split()[0])
    refused = int(said["errors"].split()[0])
    assert refused > 0 and "503" in said["errors"]
    assert classified + refused == 48


def test_script_help_keeps_every_paragraph_and_the_layout_of_examples_and_lists():
    from henet_edge.cli.base import script_help

    doc = ('''One line ``summary``.

    Prose that click
    may rewrap.

    Usage::

        python benchmarks/x.py --a 1   # a comment

    - a list item
      continued
    ''')
    assert script_help(doc).split("\n\n") == [
        "One line `summary`.",
        "Prose that click\nmay rewrap.",
        "\b\n    python benchmarks/x.py --a 1   # a comment",
        "\b\n- a list item\n  continued",
    ]


@pytest.mark.parametrize("script, later_words, example", [
    ("deploy_faults.py", "a **failed re-run**", "--kills 50 --pairs 20 --seed 1"),
    ("default_model.py", "Killed at any point", "default_model.py train   # run"),
])
def test_a_scripts_help_is_its_whole_docstring(script, later_words, example):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--help"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert later_words in " ".join(done.stdout.split())  # a paragraph after the first
    assert any(example in line for line in done.stdout.splitlines())  # kept on one line
