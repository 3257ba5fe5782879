"""Files on disk: written whole or not at all, and the project's cache folder.

Standard library only, so both sides (desktop and device) use it. The deploy agent is
the one exception: it is sent to a device as a single file and keeps its own copy.
"""

from __future__ import annotations

import contextlib
import errno as errno_codes
import glob
import os
import secrets
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from henet_edge import OutputFileError


@contextlib.contextmanager
def replacing(path: Path, suffix: str | None = None) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; moved onto ``path`` on success.

    On an error inside the block the temporary file is removed and ``path`` is left as it
    was, so a crash or Ctrl-C never leaves half a file under the real name. ``suffix`` is
    the temporary file's suffix (some writers, such as numpy's and Keras's, want theirs);
    by default the path's own. Temporary names start with a dot and hold ``.tmp``; each
    call gets its own, so two processes writing one file (two runs filling one decode
    cache) never write into each other's temporary file: the last rename wins whole.
    One that a killed writer left behind is removed by the next write of ``path``.
    """
    path = Path(path)
    suffix = path.suffix if suffix is None else suffix
    _remove_abandoned_temporaries(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}-{secrets.token_hex(4)}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _remove_abandoned_temporaries(path: Path) -> None:
    """Temporary files of ``path`` whose writer is gone (killed before its rename)."""
    for tmp in path.parent.glob(f".{glob.escape(path.stem)}.tmp*"):
        pid = tmp.name[len(path.stem) + 6:].partition("-")[0]  # ".STEM.tmp-PID-..."
        if not (pid.isdigit() and _is_running(int(pid))):
            with contextlib.suppress(OSError):
                tmp.unlink()


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``):
    at no moment is either name missing. False, having changed nothing, where the
    system cannot (another OS, an old kernel or C library, a file system without it)."""
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    errno = ctypes.get_errno()
    if errno in (errno_codes.EINVAL, errno_codes.ENOSYS, errno_codes.EOPNOTSUPP):
        return False
    raise OSError(errno, os.strerror(errno), str(a))


def write_text_atomic(path: Path, text: str, *, mode: int | None = None) -> None:
    """Replace ``path`` with ``text`` (UTF-8) in one step.

    ``mode`` (such as ``0o600`` for a file holding a secret) applies from the moment the
    file is created, so the text is never readable by others, not even briefly.
    """
    with replacing(path) as tmp:
        if mode is None:
            tmp.write_text(text, encoding="utf-8")
            return
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()  # a stale temporary file would keep its own mode
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)


def utc_timestamp(seconds: float | None = None) -> str:
    """``2026-12-03T11:43:22Z``: the one timestamp format of records and manifests."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def cache_dir() -> Path:
    """``$HENET_EDGE_CACHE``, or ``~/.cache/henet-edge``: downloads, wheels, emulated roots."""
    value = os.environ.get("HENET_EDGE_CACHE")
    return Path(value).expanduser() if value else Path.home() / ".cache" / "henet-edge"


def probe_folder(path: str | os.PathLike[str]) -> Path:
    """The nearest existing folder above ``path``, checked to take a new file (the folders
    between are made when the file is written); an :class:`OSError` naming it if not.

    A scratch file is made there and removed: the only check that permissions, read-only
    mounts and a file in the way all answer.
    """
    parent = Path(path).absolute().parent
    folder = next(p for p in (parent, *parent.parents) if os.path.lexists(p))
    if not folder.is_dir():
        raise NotADirectoryError(errno_codes.ENOTDIR, os.strerror(errno_codes.ENOTDIR),
                                 str(folder))
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(folder)) from None
    return folder


def check_output_file(path: str | os.PathLike[str], force: bool = False) -> Path:
    """Refuse, before any slow work, an output file that exists (unless ``force``), is a
    folder, or could not be written: its nearest existing folder must take a new file."""
    path = Path(path)
    if path.is_dir():
        raise OutputFileError(f"{path}: is a folder; give the name of a file")
    if not force and os.path.lexists(path):
        raise OutputFileError(f"{path}: already exists (use --force to replace it)")
    try:
        probe_folder(path)
    except NotADirectoryError as exc:
        raise OutputFileError(f"{path}: {exc.filename} is a file, not a folder") from None
    except OSError as exc:
        raise OutputFileError(f"{path}: cannot write in {exc.filename} "
                              f"({exc.strerror or exc})") from None
    return path
