"""The wheel of this project that deploy installs on the device, and wheelhouses.

:func:`project_wheel` builds ``henet_edge-<version>-py3-none-any.whl`` from
the source tree this package was imported from, in a scratch copy (the
checkout is never written to), and caches it under
``$HENET_EDGE_CACHE/wheels/<version>-<content hash>/`` (default
``~/.cache/henet-edge``), so an unchanged tree is built once. Builds are
reproducible (``SOURCE_DATE_EPOCH``), so the same sources give the same wheel
hash, and the device's venv is reused.

A wheelhouse (``--wheelhouse DIR``) holds the device side's dependencies for
an offline device, e.g. made with
``pip download -d DIR --platform manylinux2014_aarch64 --python-version 3.11
--only-binary=:all: 'henet_edge-X-py3-none-any.whl[device]'``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from henet_edge import __version__
from henet_edge.storage import cache_dir

from .errors import DeployError

SOURCE_DATE_EPOCH = "315532800"  # 1980-01-01, the earliest a zip can say
_SKIP_DIRS = {"__pycache__", ".pytest_cache", ".ruff_cache"}


def project_source() -> Path | None:
    """The source tree holding ``pyproject.toml`` for this package, if there is one."""
    root = Path(__file__).resolve().parents[2]
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and 'name = "henet-edge"' in pyproject.read_text(errors="replace"):
        return root
    return None


def _source_files(root: Path) -> list[Path]:
    files = [p for p in (root / "pyproject.toml", root / "setup.cfg", root / "setup.py",
                         root / "MANIFEST.in") if p.is_file()]
    files += sorted(p for p in root.iterdir() if p.is_file() and
                    p.name.upper().startswith(("README", "LICENSE", "LICENCE")))
    for parent, dirs, names in os.walk(root / "henet_edge"):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.endswith(".egg-info"))
        for name in sorted(names):
            if not name.endswith((".pyc", ".pyo")):
                files.append(Path(parent) / name)
    return files


def source_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in _source_files(root):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _build(src: Path, out: Path, log) -> None:
    """``python -m build --wheel``: with the installed build backend when it meets
    pyproject's requirement, else isolated (needs the package index), else, offline,
    with whatever setuptools is installed."""
    env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH, "PIP_NO_INPUT": "1"}
    base = [sys.executable, "-m", "build", "--wheel", "--outdir", str(out)]
    attempts = [("installed backend", [*base, "--no-isolation", str(src)]),
                ("isolated build", [*base, str(src)]),
                ("installed backend, requirement check skipped",
                 [*base, "--no-isolation", "--skip-dependency-check", str(src)])]
    failures = []
    for what, command in attempts:
        result = subprocess.run(command, cwd=src, env=env, capture_output=True, text=True,
                                timeout=600)
        if result.returncode == 0 and list(out.glob("*.whl")):
            return
        if "No module named build" in result.stderr:
            raise DeployError("building the device wheel needs the `build` package: "
                              "pip install build (or pass --wheel FILE)")
        tail = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        failures.append(f"{what}: {tail[-1] if tail else f'exit {result.returncode}'}")
        if log is not None and len(failures) < len(attempts):
            log(f"wheel build ({what}) did not work; trying the next way")
    raise DeployError("building the henet-edge wheel failed (" + "; ".join(failures)
                      + "); pass --wheel FILE")


def project_wheel(*, cache: Path | None = None, log=None) -> Path:
    """A wheel of this very source tree, built once per content hash."""
    root = project_source()
    if root is None:
        raise DeployError("cannot find henet-edge's source tree to build the device wheel "
                          "(installed from a wheel?); pass --wheel FILE with a wheel of the "
                          "same version")
    digest = source_digest(root)
    folder = (cache or cache_dir()) / "wheels" / f"{__version__}-{digest[:16]}"
    wheels = sorted(folder.glob("henet_edge-*.whl"))
    if wheels:
        return wheels[0]
    if log is not None:
        log(f"building the henet-edge {__version__} wheel for the device")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="henet-edge-wheel-") as tmp:
        src = Path(tmp) / "src"
        for path in _source_files(root):
            target = src / path.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        out = Path(tmp) / "dist"
        out.mkdir()
        _build(src, out, log)
        staged = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        for wheel in out.glob("*.whl"):
            shutil.move(str(wheel), staged / wheel.name)
        try:
            os.replace(staged, folder)
        except OSError:  # another process cached it first
            shutil.rmtree(staged, ignore_errors=True)
    return sorted(folder.glob("henet_edge-*.whl"))[0]


def check_wheel(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not path.is_file() or not path.name.startswith("henet_edge-") or path.suffix != ".whl":
        raise DeployError(f"--wheel {path}: not a henet_edge-*.whl file")
    return path


def wheelhouse_files(folder: str | Path) -> list[Path]:
    """The wheels in ``--wheelhouse DIR`` (refusing an empty or missing folder)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DeployError(f"--wheelhouse {folder}: no such folder")
    wheels = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix == ".whl"
                    and not p.name.startswith("henet_edge-"))
    if not wheels:
        raise DeployError(f"--wheelhouse {folder}: no .whl files in it")
    return wheels
