"""Data sources: folders, archives, the official CIFAR/SVHN formats, bad data."""

from __future__ import annotations

import http.server
import pickle
import re
import socket
import tarfile
import threading
import warnings

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from henet_edge.cli import main
from henet_edge.henet_keras.data import (
    DataError,
    load_source,
    parse_cifar_archive,
    parse_svhn_mat,
    split_validation,
)

from .conftest import CLASSES, SHARED_CIFAR, write_image_folder


def test_folder_source(image_folder):
    src = load_source(str(image_folder), use_cache=False)
    assert src.train.class_names == sorted(CLASSES)
    assert src.train.images.shape == (48, 32, 32, 3)
    assert src.train.images.dtype == np.uint8
    assert np.bincount(src.train.labels).tolist() == [16, 16, 16]


def test_tar_gz_source_with_a_top_folder(image_folder, tmp_path):
    archive = tmp_path / "imgs.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(image_folder, arcname="train")
    a = load_source(str(archive), use_cache=False).train
    b = load_source(str(image_folder), use_cache=False).train
    assert a.class_names == b.class_names
    np.testing.assert_array_equal(a.images, b.images)


def test_a_changed_archive_leaves_one_decode_in_the_cache(image_folder, tmp_path, monkeypatch):
    """The decode cache keeps one decode per archive and size: a new decode of a changed
    archive removes its stale one (and any of an older naming), never another archive's."""
    import os

    monkeypatch.setenv("HENET_EDGE_CACHE", str(tmp_path / "cache"))
    archives = [tmp_path / "a.tar.gz", tmp_path / "b.tar"]
    for archive in archives:
        with tarfile.open(archive, "w:gz" if archive.suffix == ".gz" else "w") as tar:
            tar.add(image_folder, arcname="train")
        load_source(str(archive))
    decoded = tmp_path / "cache" / "decoded"
    first = sorted(p.name for p in decoded.iterdir())
    assert len(first) == 2
    (decoded / "0123456789abcdef0123.npz").write_bytes(b"an older naming")
    (decoded / ".other.tmp-1-ab.npz").write_bytes(b"someone's write in progress")
    stat = archives[0].stat()
    os.utime(archives[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # "changed"
    again = load_source(str(archives[0])).train
    after = sorted(p.name for p in decoded.iterdir())
    assert len(after) == 3 and ".other.tmp-1-ab.npz" in after
    assert len(set(after) & set(first)) == 1  # b's decode stays; a's stale one is gone
    assert len(again) == len(load_source(str(image_folder), use_cache=False).train)


@pytest.mark.parametrize("cut", [0.5, 0.97])  # in the members, in the end-of-archive
def test_a_truncated_archive_is_one_line(image_folder, tmp_path, cut):
    whole = tmp_path / "whole.tar.gz"
    with tarfile.open(whole, "w:gz") as tar:
        tar.add(image_folder, arcname="train")
    archive = tmp_path / "cut.tar.gz"
    archive.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * cut)])
    with pytest.raises(DataError, match="the archive is truncated or damaged"):
        load_source(str(archive), use_cache=False)
    result = CliRunner().invoke(main, ["train", "--data", str(archive), "--out",
                                       str(tmp_path / "run"), "--epochs", "1"])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert "truncated or damaged" in result.output and not (tmp_path / "run").exists()


@pytest.mark.skipif(not SHARED_CIFAR.exists(), reason="shared CIFAR-10 archive not present")
def test_shared_cifar_archive_as_given(tmp_path, monkeypatch):
    monkeypatch.setenv("HENET_EDGE_CACHE", str(tmp_path))
    src = load_source(str(SHARED_CIFAR))
    assert len(src.train) == 50_000
    assert src.train.class_names[:3] == ["airplane", "automobile", "bird"]
    assert np.bincount(src.train.labels).tolist() == [5000] * 10
    again = load_source(str(SHARED_CIFAR))  # from the decoded cache
    np.testing.assert_array_equal(again.train.labels, src.train.labels)


def _write_cifar10(path, n=20):
    rng = np.random.default_rng(0)
    blobs = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        blobs[name] = {"data": data, "labels": rng.integers(0, 10, n).tolist()}
    blobs["batches.meta"] = {"label_names": [f"c{i}" for i in range(10)]}
    root = path.parent / "cifar-10-batches-py"
    root.mkdir()
    for name, obj in blobs.items():
        (root / name).write_bytes(pickle.dumps(obj))
    with tarfile.open(path, "w:gz") as tar:
        tar.add(root, arcname="cifar-10-batches-py")
    return blobs


def test_official_cifar10_format(tmp_path):
    blobs = _write_cifar10(tmp_path / "cifar-10-python.tar.gz")
    train, test = parse_cifar_archive(tmp_path / "cifar-10-python.tar.gz")
    assert len(train) == 100 and len(test) == 20
    first = blobs["data_batch_1"]["data"][0].reshape(3, 32, 32).transpose(1, 2, 0)
    np.testing.assert_array_equal(train.images[0], first)
    assert train.labels[0] == blobs["data_batch_1"]["labels"][0]


def test_official_cifar100_format(tmp_path):
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    rng = np.random.default_rng(1)
    for split, n in (("train", 30), ("test", 10)):
        (root / split).write_bytes(pickle.dumps({
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "fine_labels": rng.integers(0, 100, n).tolist(),
            "coarse_labels": rng.integers(0, 20, n).tolist()}))
    (root / "meta").write_bytes(pickle.dumps({
        "fine_label_names": [f"f{i}" for i in range(100)],
        "coarse_label_names": [f"k{i}" for i in range(20)]}))
    with tarfile.open(tmp_path / "c100.tar.gz", "w:gz") as tar:
        tar.add(root, arcname="cifar-100-python")
    train, test = parse_cifar_archive(tmp_path / "c100.tar.gz")
    assert len(train.class_names) == 100 and len(train) == 30 and len(test) == 10


def test_official_svhn_format(tmp_path):
    from scipy.io import savemat

    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (32, 32, 3, 7), dtype=np.uint8)
    y = np.array([[10], [1], [2], [3], [4], [5], [9]], dtype=np.uint8)
    savemat(tmp_path / "train_32x32.mat", {"X": x, "y": y})
    data = parse_svhn_mat(tmp_path / "train_32x32.mat", "train")
    assert data.labels.tolist() == [0, 1, 2, 3, 4, 5, 9]  # label 10 is the digit 0
    np.testing.assert_array_equal(data.images[3], x[..., 3])


def test_corrupt_images_are_skipped_and_counted(tmp_path):
    root = write_image_folder(tmp_path / "d", per_class=4)
    (root / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    good = root / "green" / "0000.jpg"
    (root / "green" / "truncated.jpg").write_bytes(good.read_bytes()[:200])
    with pytest.warns(UserWarning, match="skipped 2"):
        src = load_source(str(root), use_cache=False)
    assert len(src.train) == 12
    assert len(src.train.skipped) == 2


def test_mixed_image_sizes_become_canonical(tmp_path):
    from henet_edge.device.preprocess import canonical, open_image

    root = write_image_folder(tmp_path / "d", per_class=3)
    wide = np.zeros((90, 200, 3), np.uint8)
    wide[:, :, 0] = np.arange(200, dtype=np.uint8)  # a ramp: the crop's place shows
    Image.fromarray(wide).save(root / "red" / "wide.png")
    src = load_source(str(root), use_cache=False)
    assert src.train.images.shape == (10, 32, 32, 3)  # none dropped for its size
    got = src.train.images[src.train.ids.index("red/wide.png")]
    np.testing.assert_array_equal(got, canonical(open_image(str(root / "red" / "wide.png"))))
    assert 40 < got[:, :, 0].mean() < 160  # the centre of the ramp, not an edge


@pytest.mark.parametrize("layout, message", [
    ("missing", "no such file or folder"),
    ("empty", "the folder is empty"),
    ("all_bad", "all 2 images are unreadable"),
    ("empty_class", "class folder(s) with no readable images: zzz"),
    ("one_class", "only one class folder ('red')"),
    ("two_splits", "is in 2 folders (test/"),
    ("spaced_name", "class folder names ['red '] cannot be labels"),
])
def test_bad_data_sources(tmp_path, layout, message):
    root = tmp_path / "d"
    if layout != "missing":
        root.mkdir()
    if layout == "all_bad":
        for c in ("a", "b"):
            (root / c).mkdir()
            (root / c / "x.jpg").write_bytes(b"garbage")
    if layout == "empty_class":
        write_image_folder(root, per_class=2)
        (root / "zzz").mkdir()
        (root / "zzz" / "x.jpg").write_bytes(b"garbage")
    if layout == "one_class":
        write_image_folder(root, per_class=2)
        for c in ("green", "blue"):
            for f in (root / c).iterdir():
                f.unlink()
            (root / c).rmdir()
    if layout == "two_splits":  # its test images would be trained on, or validated on
        write_image_folder(root / "train", per_class=2)
        write_image_folder(root / "test", per_class=2)
    if layout == "spaced_name":  # trained for hours, then refused by convert's manifest
        write_image_folder(root, per_class=2)
        (root / "red").rename(root / "red ")
    with pytest.raises(DataError, match=re.escape(message)), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skipped-image warnings before the failure
        load_source(str(root), use_cache=False)


def test_validation_split_is_deterministic_and_stratified(image_folder):
    data = load_source(str(image_folder), use_cache=False).train
    train_a, val_a = split_validation(data, 0.25, seed=3)
    _train_b, val_b = split_validation(data, 0.25, seed=3)
    _, val_c = split_validation(data, 0.25, seed=4)
    assert val_a.ids == val_b.ids and val_a.ids != val_c.ids
    assert np.bincount(val_a.labels).tolist() == [4, 4, 4]
    assert not set(train_a.ids) & set(val_a.ids)


def test_every_class_keeps_an_image_for_training():
    """A class of one image went wholly to validation: the model never saw it trained."""
    from henet_edge.henet_keras.data import ImageSet

    labels = np.array([0, 1, 1, 2, 2, 2, 2])
    data = ImageSet(np.zeros((7, 4, 4, 3), np.uint8), labels, ["one", "two", "four"],
                    [f"i{n}" for n in range(7)])
    for fraction in (0.25, 0.5, 0.9):
        train, val = split_validation(data, fraction, seed=0)
        assert np.bincount(train.labels, minlength=3).min() >= 1, fraction
        assert sorted(train.ids + val.ids) == sorted(data.ids)
    train, val = split_validation(data, 0.25, seed=0)
    assert np.bincount(val.labels, minlength=3).tolist() == [0, 1, 1]


class _ShortHandler(http.server.BaseHTTPRequestHandler):
    """Serves 404 for /missing and a body cut short of its Content-Length elsewhere."""

    def do_GET(self):
        if self.path == "/missing":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"x" * 100)
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def short_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ShortHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("path", ["/missing", "/cifar-10-python.tar.gz"])
def test_named_set_download_failure_is_one_line_and_leaves_nothing(
        short_server, path, tmp_path, monkeypatch):
    from henet_edge.henet_keras import data

    monkeypatch.setenv("HENET_EDGE_CACHE", str(tmp_path))
    monkeypatch.setitem(data.OFFICIAL_URLS, "cifar10", short_server + path)
    result = CliRunner().invoke(main, ["train", "--data", "cifar10", "--out",
                                       str(tmp_path / "run")])
    assert result.exit_code == 1
    assert "cannot download" in result.output and "--data" in result.output
    assert "Traceback" not in result.output
    assert list((tmp_path / "datasets").iterdir()) == []  # no partial file kept


def test_unreachable_named_set_is_one_line(tmp_path, monkeypatch):
    from henet_edge.henet_keras import data

    with socket.socket() as probe:  # a loopback port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("HENET_EDGE_CACHE", str(tmp_path))
    monkeypatch.setitem(data.OFFICIAL_URLS, "cifar10", f"http://127.0.0.1:{port}/c.tar.gz")
    with pytest.raises(data.DataError, match=r"cannot download .*refused"):
        data.load_source("cifar10")


def test_same_source_is_one_rule_for_resume_campaign_and_overlap(tmp_path, monkeypatch):
    from henet_edge.henet_keras.data import same_source

    archive = tmp_path / "set.tar"
    archive.write_bytes(b"x")
    (tmp_path / "link.tar").symlink_to(archive)
    (tmp_path / "other.tar").write_bytes(b"x")  # equal bytes, another file
    monkeypatch.chdir(tmp_path)
    assert same_source("set.tar", str(archive))
    assert same_source(str(tmp_path / "link.tar"), "set.tar")
    assert same_source("cifar10", "cifar10")
    assert same_source("gone/set.tar", str(tmp_path / "gone" / "set.tar"))  # missing: by path
    assert not same_source("other.tar", "set.tar")
    assert not same_source("cifar10", "cifar100")
    assert not same_source(None, "set.tar") and not same_source("", "")


def test_a_photo_is_decoded_for_training_as_the_device_decodes_it(tmp_path):
    # A large JPEG decodes at a reduced scale on the device (draft); training and
    # evaluate decoded it whole, so one photo gave two arrays (and other logits).
    from henet_edge.device.preprocess import canonical, open_image

    rng = np.random.default_rng(3)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        big = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8).repeat(32, 0).repeat(32, 1)
        noisy = np.clip(big + rng.normal(0, 20, big.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(tmp_path / name / "photo.jpg", quality=90)
    loaded = load_source(str(tmp_path), use_cache=False).train
    for image, rel in zip(loaded.images, loaded.ids, strict=True):
        on_device = canonical(open_image(str(tmp_path / rel), draft_size=32), 32)
        np.testing.assert_array_equal(image, on_device)
