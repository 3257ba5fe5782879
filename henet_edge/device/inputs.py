"""Where the device's inputs come from: image files, folders of them, labels files.

One copy of each rule, used by ``classify``, ``camera``, ``bench``,
``evaluate`` and ``remote classify``:

- :data:`IMAGE_SUFFIXES`: what a folder walk picks up;
- :func:`open_regular`: only regular files are opened (a FIFO, a device or a
  folder given as an image is an error, never a hang);
- :func:`walk_images`: an iterative, sorted folder walk that skips hidden
  entries, follows a symlinked folder once and reports loops;
- :func:`iter_inputs`: files and folders from the command line;
- :func:`parse_labels` / :func:`read_labels`: one label per line (a label may
  contain spaces, like ``hot dog``);
- :func:`printable` and :func:`json_path`: file names made safe for a
  terminal and for strict JSON parsers.
"""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from henet_edge import HenetEdgeError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
IMAGE_KINDS = "JPEG, PNG, BMP or WebP"
# The only decoders an image is offered to (Pillow's names), whatever its name or
# upload type says: never EPS (Ghostscript), TIFF, PSD or Pillow's other readers.
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "WEBP")
MAX_LABELS_BYTES = 1_000_000


class InputError(HenetEdgeError, ValueError):
    """An input path that cannot be used at all."""


class LabelsError(InputError):
    """A labels file that cannot be used."""


# ------------------------------------------------------------------ regular files
def file_kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def open_regular(path: str | os.PathLike) -> BinaryIO:
    """Open ``path`` for reading only if it is a regular file.

    The file is opened non-blocking and checked with ``fstat`` on the open
    descriptor, so a FIFO swapped in after a check cannot block. Raises
    ``ValueError`` (not a regular file) or ``OSError`` (cannot be opened).
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"not a regular file: {file_kind(info.st_mode)}")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def regular_size(path: str | os.PathLike) -> int:
    """Size of a regular file; ``ValueError`` for other kinds, ``OSError`` if missing."""
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"not a regular file: {file_kind(info.st_mode)}")
    return info.st_size


# ------------------------------------------------------------------ folders
def _scan(folder: str) -> list[os.DirEntry]:
    with os.scandir(folder) as entries:
        return sorted(entries, key=lambda e: e.name)


def walk_images(folder: str | Path) -> Iterator[tuple[Path, str | None]]:
    """Image files under ``folder``: sorted, depth first, hidden entries skipped.

    Iterative (any depth). A symlink to a folder is followed unless that
    folder is already being walked or was walked (a loop or a second path to
    it), which is reported as ``(path, problem)``; so are folders that cannot
    be read and image-named entries that are not regular files.
    """
    root = Path(folder)
    try:
        top = os.stat(root)
    except OSError as exc:
        yield root, f"cannot read folder: {exc.strerror or exc}"
        return
    seen = {(top.st_dev, top.st_ino): root}
    stack: list[Iterator[os.DirEntry]] = []
    try:
        stack.append(iter(_scan(str(root))))
    except OSError as exc:
        yield root, f"cannot read folder: {exc.strerror or exc}"
        return
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        try:
            info = os.stat(entry.path)  # follows symlinks
        except OSError as exc:
            if path.suffix.lower() in IMAGE_SUFFIXES:
                yield path, f"cannot read: {exc.strerror or exc}"
            continue
        if stat.S_ISDIR(info.st_mode):
            key = (info.st_dev, info.st_ino)
            if key in seen:
                yield path, f"folder loop: this is {seen[key]} again (not walked twice)"
                continue
            seen[key] = path
            try:
                stack.append(iter(_scan(entry.path)))
            except OSError as exc:
                yield path, f"cannot read folder: {exc.strerror or exc}"
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            if stat.S_ISREG(info.st_mode):
                yield path, None
            else:
                yield path, f"not a regular file: {file_kind(info.st_mode)}"


def iter_inputs(inputs: Iterable[str | Path]) -> Iterator[tuple[Path, str | None]]:
    """``(path, None)`` for each image to try, ``(path, problem)`` for bad inputs.

    Files named explicitly are tried whatever their extension (the decoder
    decides); folders are walked by :func:`walk_images`. An empty path, a
    folder with no images or a missing path is a problem entry.
    """
    for item in inputs:
        if str(item) == "":
            yield Path(""), "empty path: name a file or folder"
            continue
        path = Path(item).expanduser()
        if path.is_dir():
            found = False
            for entry in walk_images(path):
                found = True
                yield entry
            if not found:
                yield path, f"no {IMAGE_KINDS} images in this folder"
        elif path.exists() or path.is_symlink():
            yield path, None
        else:
            yield path, "no such file or folder"


# ------------------------------------------------------------------ labels
def parse_labels(text: str, source: str = "labels") -> list[str]:
    """Labels, one per line (inner spaces kept); trailing blank lines ignored."""
    labels = [line.strip() for line in text.splitlines()]
    while labels and not labels[-1]:
        labels.pop()
    if not labels:
        raise LabelsError(f"{source}: labels file is empty")
    if any(not label for label in labels):
        raise LabelsError(f"{source}: labels file has blank lines between labels")
    return labels


def read_labels(path: str | Path) -> list[str]:
    """:func:`parse_labels` of a UTF-8 file (a regular file of at most 1 MB)."""
    path = Path(path).expanduser()
    try:
        with open_regular(path) as f:
            data = f.read(MAX_LABELS_BYTES + 1)
        if len(data) > MAX_LABELS_BYTES:
            raise ValueError(f"over {MAX_LABELS_BYTES:,} bytes")
        text = data.decode("utf-8")
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise LabelsError(f"{printable(path)}: cannot read labels ({reason})") from None
    return parse_labels(text, printable(path))


# ------------------------------------------------------------------ names in output
def printable(name: str | os.PathLike) -> str:
    """``name`` safe for a terminal: control characters and undecodable bytes as escapes.

    A newline becomes ``\\n``, ESC ``\\x1b``, a byte that was not UTF-8 ``\\xNN``
    (and a backslash stays as it is).
    """
    text = os.fspath(name)
    out = []
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that was not valid UTF-8 (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif code < 0x20 or 0x7F <= code < 0xA0 or 0xD800 <= code <= 0xDFFF:
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def json_path(name: str | os.PathLike) -> dict[str, str]:
    """``{"path": ...}`` for JSON output, valid UTF-8 whatever the name's bytes.

    A name that is valid UTF-8 is given as it is. Otherwise ``path`` shows
    each undecodable byte as ``\\xNN`` and ``path_b64`` holds the name's exact
    bytes (base64), from which it can be recovered.
    """
    text = os.fspath(name)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raw = os.fsencode(text)
        return {"path": raw.decode("utf-8", "backslashreplace"),
                "path_b64": base64.b64encode(raw).decode("ascii")}
    return {"path": text}


def refuse_empty(paths: Iterable[str], what: str) -> None:
    """An empty path would mean the current folder: refuse it with one line."""
    if any(str(p) == "" for p in paths):
        raise InputError(f"{what}: an empty path is not a file or folder (use . for the "
                         "current folder)")
