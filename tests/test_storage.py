"""Files written whole or not at all; one timestamp format; one cache folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from henet_edge.storage import cache_dir, replacing, utc_timestamp, write_text_atomic


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "history.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), replacing(target) as tmp:
        tmp.write_text("half of the new")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.json"]


def test_a_finished_write_replaces_the_file(tmp_path):
    target = tmp_path / "weights.npz"
    target.write_text("old")
    with replacing(target, ".npz") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".") and tmp.suffix == ".npz"
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert not tmp.exists()
    write_text_atomic(tmp_path / "a.txt", "hot dog\n")
    assert (tmp_path / "a.txt").read_text() == "hot dog\n"


def test_two_writers_of_one_file_never_share_a_temporary(tmp_path):
    # Two runs filling one decode cache at once: each write lands whole, none fails.
    target = tmp_path / "cache.npz"
    with replacing(target, ".npz") as first:
        first.write_text("first, " * 1000)
        with replacing(target, ".npz") as second:
            assert second != first
            second.write_text("second")
        assert target.read_text() == "second"
    assert target.read_text() == "first, " * 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.npz"]


def test_a_killed_writers_temporary_is_removed_a_live_ones_kept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    target = tmp_path / "cache.npz"
    abandoned = tmp_path / f".cache.tmp-{dead.pid}-0a1b2c3d.npz"
    live = tmp_path / f".cache.tmp-{os.getppid()}-0a1b2c3d.npz"  # a writer still at work
    for p in (abandoned, live):
        p.write_text("x" * 100)
    with replacing(target, ".npz") as tmp:
        tmp.write_text("whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["cache.npz", live.name])


def test_timestamp_format():
    assert utc_timestamp(0) == "1970-01-01T00:00:00Z"
    assert utc_timestamp(1_764_763_402) == "2025-12-03T12:03:22Z"


def test_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("HENET_EDGE_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("HENET_EDGE_CACHE")
    assert cache_dir() == Path.home() / ".cache" / "henet-edge"


def test_a_secret_is_written_owner_only_from_the_start(tmp_path):
    path = tmp_path / "unit.service"
    path.write_text("old")
    path.chmod(0o644)
    stale = tmp_path / ".unit.tmp.service"  # a killed earlier write, readable by all
    stale.write_text("stale")
    stale.chmod(0o644)
    write_text_atomic(path, "token=s3cret\n", mode=0o600)
    assert path.read_text() == "token=s3cret\n"
    assert path.stat().st_mode & 0o777 == 0o600
    assert not stale.exists()
