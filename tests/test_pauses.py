"""Paused time (SIGSTOP) is kept out of an epoch's images/s, and history files take new columns."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

from henet_edge.henet_keras.epochs import write_history
from henet_edge.henet_keras.pauses import PauseClock, active_seconds
from henet_edge.henet_keras.run import Run


def test_only_heartbeats_later_than_the_gap_count_beyond_one_tick():
    clock = PauseClock(tick=0.5, gap=2.0)
    for now in (0.0, 0.5, 1.0, 2.9, 3.4, 13.4, 13.9):  # 1.9 s late: contention, not a stop
        clock.note(now)
    assert clock._paused == 9.5  # 13.4 - 3.4 - 0.5


def test_active_seconds_leave_out_the_stop_and_old_rows_count_their_wall_time():
    assert active_seconds({"seconds": 300.0, "paused_seconds": 120.5}) == 179.5
    assert active_seconds({"seconds": 300.0}) == 300.0


_CHILD = """
import sys
from henet_edge.henet_keras.pauses import PauseClock, active_seconds
clock = PauseClock().start()
print(f"ready {clock.paused():.3f}", flush=True)
sys.stdin.readline()
print(f"{clock.paused():.3f}", flush=True)
"""


def test_a_process_stopped_and_continued_counts_the_stop():
    child = subprocess.Popen([sys.executable, "-c", _CHILD], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        first = child.stdout.readline().split()
        assert first[0] == "ready" and float(first[1]) == 0.0
        time.sleep(1.0)
        os.kill(child.pid, signal.SIGSTOP)
        time.sleep(3.0)
        os.kill(child.pid, signal.SIGCONT)
        out, _ = child.communicate("\n", timeout=30)
    finally:
        child.kill()
    assert 2.0 < float(out) < 4.0


def test_every_epoch_records_its_paused_seconds(tiny_run):
    config = json.loads((tiny_run / "config.json").read_text())
    images = config["plan"]["steps_per_epoch"] * config["plan"]["batch_size"]
    for row in Run.load(tiny_run).history:
        assert 0.0 <= row["paused_seconds"] < row["seconds"]
        active = row["seconds"] - row["paused_seconds"]  # each rounded to 0.01 s
        low, high = images / (active + 0.02), images / max(active - 0.02, 1e-3)
        assert low - 0.1 <= row["images_per_s"] <= high + 0.1


def test_history_of_older_rows_takes_the_new_column(tmp_path):
    old = {"epoch": 1, "seconds": 10.0, "images_per_s": 5.0}
    new = {"epoch": 2, "seconds": 12.0, "paused_seconds": 2.0, "images_per_s": 5.0}
    write_history(tmp_path, [old, new])
    with open(tmp_path / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["paused_seconds"] for r in rows] == ["", "2.0"]
    assert json.loads((tmp_path / "history.json").read_text()) == [old, new]


def test_the_live_bar_leaves_a_pause_out_of_its_images_per_second(monkeypatch):
    from types import SimpleNamespace

    from henet_edge.henet_keras import epochs

    progress = epochs._ProgressBar({"steps_per_epoch": 10, "batch_size": 100, "epochs": 1},
                                   show=False)
    stopped = iter([0.0, 9.0])  # seconds stopped, at the epoch's start and at its step
    monkeypatch.setattr(progress.pauses, "paused", lambda: next(stopped))
    clock = iter([100.0, 110.0])
    monkeypatch.setattr(epochs.time, "perf_counter", lambda: next(clock))
    progress.start(0)
    shown: dict = {}
    progress.bar = SimpleNamespace(set_postfix=lambda **kw: shown.update(kw),
                                   update=lambda _n: None)
    progress.step(0, {"loss": 1.0, "accuracy": 0.5})
    assert shown["img_s"] == "100"  # 100 images in the 1 s it ran, not the 10 s of wall time
