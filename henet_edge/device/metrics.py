"""Classification metrics from logits (numpy only; used on desktop and device)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from henet_edge.plots import png_path, pyplot, save_figure


def classification_metrics(logits: np.ndarray, labels: np.ndarray,
                           class_names: list[str]) -> dict:
    """Top-1, top-5, per-class accuracy and the confusion matrix.

    A class with no image has no accuracy (None, JSON's null, not NaN, which JSON
    lacks); a label outside the classes is an error, not a count in another row.
    """
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    n = len(class_names)
    if labels.size and (labels.min() < 0 or labels.max() >= n):
        raise ValueError(f"labels must be 0 to {n - 1} for {n} classes, got "
                         f"{int(labels.min())} to {int(labels.max())}")
    pred = logits.argmax(axis=1)
    k = min(5, logits.shape[1])
    top5 = np.argsort(-logits, axis=1)[:, :k]
    confusion = np.zeros((n, n), dtype=np.int64)
    np.add.at(confusion, (labels, pred), 1)
    per_class = {}
    for c, name in enumerate(class_names):
        total = int(confusion[c].sum())
        per_class[name] = float(confusion[c, c] / total) if total else None
    return {
        "images": len(labels),
        "top1": float((pred == labels).mean()) if len(labels) else None,
        "top5": float((top5 == labels[:, None]).any(axis=1).mean()) if len(labels) else None,
        "per_class": per_class,
        "confusion": confusion.tolist(),
    }


def plot_confusion(confusion: list[list[int]], class_names: list[str], path: Path,
                   title: str = "") -> Path:
    """Row-normalised confusion matrix as a PNG; returns where it was written
    (see :func:`png_path`)."""
    plt = pyplot()
    cm = np.asarray(confusion, dtype=float)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    size = max(4.5, 0.45 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(ticks, class_names, fontsize=8)
    if len(class_names) <= 20:
        for i in ticks:
            for j in ticks:
                if cm[i, j]:
                    ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=6,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix")
    fig.tight_layout()
    path = png_path(path, "confusion.png")
    save_figure(fig, path, dpi=110)
    return path
