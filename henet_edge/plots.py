"""Figures: matplotlib headless, where a PNG lands, a check before slow work, one writer.

matplotlib is imported only when a figure is drawn (the device side runs without it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from henet_edge import HenetEdgeError
from henet_edge.storage import probe_folder, replacing


class PlotError(HenetEdgeError, ValueError):
    """A plot that cannot be drawn, or written where it was asked for."""


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the headless Agg backend."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotError("plots need matplotlib: `pip install matplotlib`") from None
    return plt


def png_path(path: str | Path, default_name: str) -> Path:
    """Where a plot asked for at ``path`` lands: a folder (one that exists, or any path
    ending in a slash) gets ``default_name`` inside it, a name without a suffix gets
    ``.png`` (as matplotlib would write it)."""
    folder = str(path).endswith((os.sep, "/"))
    path = Path(path)
    if folder or path.is_dir():
        return path / default_name
    return path.with_suffix(".png") if not path.suffix else path


def check_plot_target(path: str | Path, default_name: str) -> Path:
    """Fail before slow work when a plot could not be written at ``path``.

    Missing folders are fine (they are made when the plot is written, as for every
    output file); a file in the way or a folder that takes no new file is not.
    Returns the PNG's path (see :func:`png_path`).
    """
    target = png_path(path, default_name)
    formats = _formats()
    if formats and target.suffix.lstrip(".").lower() not in formats:
        raise PlotError(f"{path}: cannot write the plot (no image format {target.suffix!r}; "
                        f"use one of {', '.join('.' + f for f in sorted(formats))})")
    try:
        probe_folder(target)
    except OSError as exc:
        raise PlotError(f"{path}: cannot write the plot ({exc.strerror or exc})") from None
    return target


def _formats() -> set[str]:
    """The file types matplotlib writes (none known without matplotlib: not checked)."""
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        return set()
    return set(FigureCanvasBase.get_supported_filetypes())


def save_figure(fig: Any, path: str | Path, dpi: int) -> Path:
    """Write ``fig`` at ``path`` whole or not at all (making missing folders), in the
    format its suffix names (PNG, SVG, PDF...), and close it; a path that cannot be
    written, or a format matplotlib does not know, is a :class:`PlotError`."""
    plt = pyplot()
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with replacing(path) as tmp:  # the temporary name keeps the suffix: the format
            fig.savefig(tmp, dpi=dpi)
    except OSError as exc:
        raise PlotError(f"{path}: cannot write the plot ({exc.strerror or exc})") from None
    except ValueError as exc:  # "Format 'xyz' is not supported"
        raise PlotError(f"{path}: cannot write the plot ({exc})") from None
    finally:
        plt.close(fig)
    return path
