"""Image data sources, decoded once into canonical uint8 arrays (no TensorFlow).

A source is one of:

- an image folder ``root/<class>/*.{jpg,jpeg,png,bmp,webp,gif,tif,tiff}``
  (a single top-level folder such as ``train/`` is descended into);
- a ``.tar``, ``.tar.gz`` or ``.tgz`` archive of such a folder;
- ``cifar10``, ``cifar100`` or ``svhn``: the official downloads, fetched once
  into the cache folder (``$HENET_EDGE_CACHE`` or ``~/.cache/henet-edge``).

Every image goes through :func:`henet_edge.device.preprocess.canonical`, the
same function the device uses. Corrupt images are skipped and counted.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import pickle
import tarfile
import urllib.request
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from henet_edge import HenetEdgeError
from henet_edge.device.inputs import IMAGE_SUFFIXES as DEVICE_SUFFIXES
from henet_edge.device.manifest import is_label
from henet_edge.device.preprocess import DEFAULT, canonical, draft
from henet_edge.storage import cache_dir, replacing

# The device's image suffixes, plus formats that only training sets come in.
IMAGE_SUFFIXES = {*DEVICE_SUFFIXES, ".gif", ".tif", ".tiff"}
NAMED_SETS = ("cifar10", "cifar100", "svhn")
OFFICIAL_URLS = {
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    "svhn_train": "http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
    "svhn_test": "http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
}


class DataError(HenetEdgeError, ValueError):
    """A data source that cannot be used, with a message for the user."""


@dataclass
class ImageSet:
    """Canonical uint8 images ``(N, S, S, 3)`` with integer labels and ids."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    ids: list[str]
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> ImageSet:
        return ImageSet(self.images[index], self.labels[index], self.class_names,
                        [self.ids[i] for i in index])


# Training augmentations (:func:`.datasets.augmenter`): pad 4 + random crop + flip;
# centre crop + flip; centre crop only.
AUGMENTS = ("cifar", "flip", "none")


@dataclass
class DataSource:
    """A loaded source: its training set, an official test split if it has one."""

    name: str
    kind: str
    train: ImageSet
    test: ImageSet | None = None
    augment: str = "cifar"  # the default training augmentation: one of AUGMENTS


def _decode(data: bytes, size: int) -> np.ndarray:
    """One image at canonical ``size``, decoded as the device decodes it (JPEG draft)."""
    with Image.open(io.BytesIO(data)) as image:
        draft(image, size)
        image.load()
        return canonical(image, size)


def _from_members(
    members: Iterable[tuple[str, Callable[[], bytes]]], source: str, size: int,
    progress: Callable[[int], None] | None = None,
) -> ImageSet:
    """Build an ImageSet from ``(relative path, reader)`` pairs laid out as ``class/file``."""
    by_class: dict[str, list[tuple[str, Callable[[], bytes]]]] = {}
    folders: dict[str, set[str]] = {}
    for rel, reader in members:
        parts = Path(rel).parts
        if len(parts) < 2 or Path(rel).suffix.lower() not in IMAGE_SUFFIXES:
            continue
        by_class.setdefault(parts[-2], []).append((rel, reader))
        folders.setdefault(parts[-2], set()).add(str(Path(*parts[:-1])))
    if not by_class:
        raise DataError(f"{source}: no images found (expected <class>/<image> files)")
    for name, where in folders.items():
        if len(where) > 1:  # train/cat and test/cat: two splits would become one pool
            raise DataError(f"{source}: class {name!r} is in {len(where)} folders "
                            f"({', '.join(sorted(where)[:3])}); give the folder of one split")
    class_names = sorted(by_class)  # folder names: distinct and never empty
    bad = [name for name in class_names if not is_label(name)]
    if bad:
        raise DataError(f"{source}: class folder names {bad!r} cannot be labels (no "
                        "surrounding spaces or line breaks); rename them")
    if len(class_names) < 2:
        raise DataError(f"{source}: only one class folder ({class_names[0]!r}); need at least 2")
    images, labels, ids, skipped = [], [], [], []
    for label, name in enumerate(class_names):
        for rel, reader in sorted(by_class[name]):
            try:
                images.append(_decode(reader(), size))
            except Exception as exc:
                skipped.append(f"{rel}: {exc}")
                continue
            finally:
                if progress:
                    progress(1)
            labels.append(label)
            ids.append(rel)
    if skipped:
        warnings.warn(f"{source}: skipped {len(skipped)} unreadable image(s), "
                      f"first: {skipped[0]}", stacklevel=2)
    if not images:
        raise DataError(f"{source}: all {len(skipped)} images are unreadable")
    present = set(labels)
    empty = [n for i, n in enumerate(class_names) if i not in present]
    if empty:
        raise DataError(f"{source}: class folder(s) with no readable images: {', '.join(empty)}")
    return ImageSet(np.stack(images), np.asarray(labels, dtype=np.int32), class_names, ids,
                    skipped)


def _strip_single_root(paths: list[str]) -> str:
    """The common single top folder to descend into (``train/``), or ''."""
    tops = {Path(p).parts[0] for p in paths if len(Path(p).parts) >= 3}
    deeper = all(len(Path(p).parts) >= 3 for p in paths)
    return next(iter(tops)) if len(tops) == 1 and deeper else ""


def load_folder(root: Path, size: int, progress=None) -> ImageSet:
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    files = [p for p in root.rglob("*") if p.is_file()]
    if not files:
        raise DataError(f"{root}: the folder is empty")
    rel = [str(p.relative_to(root)) for p in files]
    top = _strip_single_root(rel)
    members = [(str(Path(r).relative_to(top)) if top else r, p.read_bytes)
               for r, p in zip(rel, files, strict=False)]
    return _from_members(members, str(root), size, progress)


def load_tar(path: Path, size: int, progress=None) -> ImageSet:
    try:
        tar = tarfile.open(path)  # noqa: SIM115 - closed by the `with` below
    except (tarfile.TarError, OSError) as exc:
        raise DataError(f"{path}: not a readable tar archive ({exc})") from exc
    with tar, _damaged_archive(path):
        infos = [m for m in tar.getmembers() if m.isfile()]
        top = _strip_single_root([m.name for m in infos])

        def reader(info: tarfile.TarInfo) -> Callable[[], bytes]:
            return lambda: tar.extractfile(info).read()

        members = [(str(Path(m.name).relative_to(top)) if top else m.name, reader(m))
                   for m in infos]
        return _from_members(members, str(path), size, progress)


@contextlib.contextmanager
def _damaged_archive(path: Path) -> Iterator[None]:
    """A truncated or corrupt archive, found while reading it, as one :class:`DataError`."""
    try:
        yield
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DataError(f"{path}: the archive is truncated or damaged "
                        f"({str(exc) or type(exc).__name__})") from None


def _download(url: str, dest: Path) -> Path:
    """Fetch ``url`` to ``dest`` via a temporary file; only a complete download is kept."""
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    print(f"downloading {url} -> {dest}")
    try:
        with replacing(dest) as tmp:
            with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
                expected = response.headers.get("Content-Length")
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                got = out.tell()
            if expected is not None and got != int(expected):
                raise DataError(f"download of {url} stopped at {got} of {expected} bytes")
    except (OSError, http.client.HTTPException, DataError) as exc:
        reason = exc if isinstance(exc, DataError) else getattr(exc, "reason", None) or exc
        raise DataError(f"cannot download {url} ({reason}); pass an image folder or a "
                        ".tar/.tar.gz of one to --data instead") from None
    return dest


def parse_cifar_archive(path: Path, fine: bool = True) -> tuple[ImageSet, ImageSet]:
    """Parse the official CIFAR-10/100 python archive into (train, test) sets."""
    with _damaged_archive(path), tarfile.open(path) as tar:
        blobs = {Path(m.name).name: tar.extractfile(m).read() for m in tar.getmembers()
                 if m.isfile()}
    if "batches.meta" in blobs:  # CIFAR-10
        meta = pickle.loads(blobs["batches.meta"], encoding="latin1")
        names, key = meta["label_names"], "labels"
        train_parts = [f"data_batch_{i}" for i in range(1, 6)]
        test_parts = ["test_batch"]
    elif "meta" in blobs:  # CIFAR-100
        meta = pickle.loads(blobs["meta"], encoding="latin1")
        names = meta["fine_label_names" if fine else "coarse_label_names"]
        key = "fine_labels" if fine else "coarse_labels"
        train_parts, test_parts = ["train"], ["test"]
    else:
        raise DataError(f"{path}: not an official CIFAR python archive")

    def load(parts: list[str], split: str) -> ImageSet:
        xs, ys = [], []
        for part in parts:
            if part not in blobs:
                raise DataError(f"{path}: missing {part}")
            batch = pickle.loads(blobs[part], encoding="latin1")
            xs.append(np.asarray(batch["data"], np.uint8).reshape(-1, 3, 32, 32))
            ys.extend(batch[key])
        images = np.concatenate(xs).transpose(0, 2, 3, 1).copy()
        ids = [f"{split}/{i}" for i in range(len(ys))]
        return ImageSet(images, np.asarray(ys, np.int32), list(names), ids)

    return load(train_parts, "train"), load(test_parts, "test")


def parse_svhn_mat(path: Path, split: str) -> ImageSet:
    """Parse an official SVHN ``*_32x32.mat`` file (label 10 means digit 0)."""
    from scipy.io import loadmat

    mat = loadmat(path)
    images = np.asarray(mat["X"], np.uint8).transpose(3, 0, 1, 2).copy()
    labels = np.asarray(mat["y"], np.int64).reshape(-1) % 10
    ids = [f"{split}/{i}" for i in range(len(labels))]
    return ImageSet(images, labels.astype(np.int32), [str(d) for d in range(10)], ids)


def _resize_set(images: ImageSet, size: int) -> ImageSet:
    if images.images.shape[1] == size:
        return images
    arr = np.stack([canonical(Image.fromarray(im), size) for im in images.images])
    return ImageSet(arr, images.labels, images.class_names, images.ids)


def load_named(name: str, size: int) -> DataSource:
    root = cache_dir() / "datasets"
    if name in ("cifar10", "cifar100"):
        archive = _download(OFFICIAL_URLS[name], root / Path(OFFICIAL_URLS[name]).name)
        train, test = parse_cifar_archive(archive)
        return DataSource(name, "named", _resize_set(train, size), _resize_set(test, size))
    train = parse_svhn_mat(_download(OFFICIAL_URLS["svhn_train"], root / "svhn_train.mat"),
                           "train")
    test = parse_svhn_mat(_download(OFFICIAL_URLS["svhn_test"], root / "svhn_test.mat"), "test")
    return DataSource(name, "named", _resize_set(train, size), _resize_set(test, size),
                      augment="none")


def _cache_file(path: Path, size: int) -> Path:
    """Where archive ``path``'s decode at ``size`` is kept: named by the archive and size,
    then by the archive's state and the decode, so a stale one can be found and removed."""
    stat = path.stat()
    archive = f"{path.resolve()}|{size}"
    # "draft": arrays decoded as the device decodes (a cache of full decodes is not reused)
    state = f"{stat.st_size}|{stat.st_mtime_ns}|{DEFAULT.name}|draft"
    name = "-".join(hashlib.sha256(t.encode()).hexdigest()[:12] for t in (archive, state))
    return cache_dir() / "decoded" / f"{name}.npz"


def _remove_stale_decodes(kept: Path) -> None:
    """Remove decodes no load can use any more: the same archive's at an older state (it
    changed, or the decode did), and any named before decodes were named by archive."""
    archive = kept.name.partition("-")[0]
    for old in kept.parent.glob("*.npz"):
        ours = old.name.startswith(f"{archive}-") or "-" not in old.name
        if old != kept and ours and not old.name.startswith("."):  # "." a writer's temp
            old.unlink(missing_ok=True)


def load_source(spec: str, size: int = DEFAULT.canonical_size, *, use_cache: bool = True,
                progress=None) -> DataSource:
    """Load a data source by name or path into canonical uint8 arrays."""
    if spec in NAMED_SETS:
        return load_named(spec, size)
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(f"{spec}: no such file or folder (or named set: "
                        f"{', '.join(NAMED_SETS)})")
    is_tar = path.is_file() and any(str(path).endswith(s) for s in (".tar", ".tar.gz", ".tgz"))
    if path.is_file() and not is_tar:
        raise DataError(f"{spec}: not a folder or a .tar/.tar.gz/.tgz archive")
    cache = _cache_file(path, size) if is_tar else None
    if cache is not None and use_cache and cache.exists():
        with np.load(cache, allow_pickle=False) as z:
            train = ImageSet(z["images"], z["labels"], [str(c) for c in z["class_names"]],
                             [str(i) for i in z["ids"]], [str(s) for s in z["skipped"]])
    else:
        train = load_tar(path, size, progress) if is_tar else load_folder(path, size, progress)
        if cache is not None and use_cache:
            cache.parent.mkdir(parents=True, exist_ok=True)
            with replacing(cache, ".npz") as tmp:
                np.savez(tmp, images=train.images, labels=train.labels,
                         class_names=np.array(train.class_names), ids=np.array(train.ids),
                         skipped=np.array(train.skipped, dtype=str))
            _remove_stale_decodes(cache)
    return DataSource(str(path), "tar" if is_tar else "folder", train)


def evaluation_images(spec: str, size: int = DEFAULT.canonical_size, *,
                      progress=None) -> tuple[ImageSet, str]:
    """The images of ``spec`` to measure a model on, and how to name them: a named set's
    official test split (never its training images), a folder or archive whole."""
    loaded = load_source(spec, size, progress=progress)
    if loaded.test is not None:
        return loaded.test, f"the test split of {spec}"
    return loaded.train, f"all of {spec}"


def training_overlap(data: str, trained_on: str | None, option: str = "--data") -> str | None:
    """Why measuring on ``data`` (given as ``option``) is not held out, when it is the data
    a model was trained on (``trained_on``, if known); else None. A named set is measured
    on its test split, so it never overlaps."""
    if data in NAMED_SETS or trained_on is None or not same_source(data, str(trained_on)):
        return None
    return (f"{option} {data} is the data the model was trained on, so this accuracy is not "
            f"held out (omit {option} to use the held-out images)")


def same_source(a: str | None, b: str | None) -> bool:
    """Whether two data values name the same data.

    Equal text (a named set such as ``cifar10``), or one file or folder reached
    through different relative paths, links or ``~``. A missing path compares by
    its resolved form.
    """
    if not a or not b:
        return False
    if a == b:
        return True
    left, right = Path(a).expanduser(), Path(b).expanduser()
    try:
        return left.samefile(right)
    except OSError:
        return left.resolve() == right.resolve()


def split_validation(images: ImageSet, fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """A deterministic, class-stratified (train, validation) split.

    Each class gives ``fraction`` of its images (at least one) to validation, but keeps at
    least one for training: a class of one image is only trained on, never only measured.
    """
    if not 0 < fraction < 1:
        raise DataError(f"--val-split must be between 0 and 1, got {fraction}")
    rng = np.random.default_rng(seed)
    val_idx = []
    for label in range(len(images.class_names)):
        idx = np.flatnonzero(images.labels == label)
        take = min(max(1, round(len(idx) * fraction)), len(idx) - 1)
        val_idx.extend(rng.permutation(idx)[:take].tolist())
    val_mask = np.zeros(len(images), bool)
    val_mask[val_idx] = True
    return images.subset(np.flatnonzero(~val_mask)), images.subset(np.flatnonzero(val_mask))
