"""Where ``convert`` may write: a new path, an empty folder, or (with ``--force``) a bundle.

``--force`` replaces only a folder that is a bundle (it holds a manifest of the
bundle format); anything else of the user's is refused, never deleted.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from henet_edge import HenetEdgeError
from henet_edge.device.bundle import FORMAT, MANIFEST


class OutputError(HenetEdgeError, ValueError):
    """An ``--out`` that convert must not write to."""


def is_bundle_folder(path: Path) -> bool:
    """A folder whose ``manifest.json`` says it is a bundle (damaged or not)."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == FORMAT


def check_output(out: Path, force: bool) -> None:
    """Refuse an ``--out`` that would lose something, or that cannot be written: before
    any slow work."""
    out = Path(out)
    if out.exists() or out.is_symlink():
        if out.is_symlink() or not out.is_dir():
            raise OutputError(f"{out}: exists and is not a folder; pick another --out")
        if any(out.iterdir()):  # an empty folder is written into
            if not is_bundle_folder(out):
                raise OutputError(f"{out}: exists, is not empty and is not a bundle (no "
                                  f"bundle {MANIFEST}); --force replaces only a bundle, so "
                                  "pick another --out or empty it yourself")
            if not force:
                raise OutputError(f"{out}: already exists (use --force to replace it)")
    here = Path.cwd().resolve()
    if out.resolve() in (here, *here.parents):
        raise OutputError(f"{out}: is the current folder or holds it; give --out the name "
                          f"of a new folder")
    parent = out.resolve().parent
    ancestor = next(p for p in (parent, *parent.parents) if p.exists())
    if not ancestor.is_dir():
        raise OutputError(f"{out}: {ancestor} is a file, not a folder; pick another --out")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(f"{out}: cannot write in {ancestor} (permission denied); pick "
                          f"another --out")
