"""The end of each epoch: history row, checkpoint, best weights, curves and log line.

:class:`_Checkpointer` writes them in an order that a kill anywhere in between
costs at most that epoch; every file goes to a temporary name first.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from henet_edge.plots import pyplot, save_figure
from henet_edge.storage import replacing, write_text_atomic

from .ema import averaged, shipped_weights, uses_average
from .pauses import PauseClock, active_seconds
from .run import CHECKPOINT, HISTORY, HISTORY_CSV, STATE

BEST_WEIGHTS = "best.weights.npz"
_PENDING_BEST = "best.weights.epoch"  # + N + ".npz": epoch N's best, until its checkpoint


def settle_best_weights(run_dir: Path, epochs_kept: int) -> None:
    """On resume: a best-weights file saved just before a kill becomes the best if the
    checkpoint of its epoch was saved too (that epoch is kept), else it is dropped."""
    def epoch(path: Path) -> int:
        return int(path.name[len(_PENDING_BEST):-len(".npz")])

    for path in sorted(run_dir.glob(f"{_PENDING_BEST}*.npz"), key=epoch):
        if epoch(path) <= epochs_kept:
            os.replace(path, run_dir / BEST_WEIGHTS)
        else:
            path.unlink()


def save_model_atomic(model, path: Path) -> None:
    with replacing(path, ".keras") as tmp:
        model.save(tmp)


def save_weights_atomic(weights: list, path: Path) -> None:
    """All weights as ``w0..wN`` arrays (shared by the masked and native forms)."""
    with replacing(path, ".npz") as tmp:
        np.savez(tmp, **{f"w{i}": w for i, w in enumerate(weights)})


def plot_curves(history: list[dict], path: Path) -> None:
    plt = pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(13, 3.8))
    ax1.plot(epochs, [h["loss"] for h in history], label="train")
    ax1.plot(epochs, [h["val_loss"] for h in history], label="validation")
    ax1.set_title("loss")
    ax2.plot(epochs, [100 * h["accuracy"] for h in history], label="train")
    ax2.plot(epochs, [100 * h["val_accuracy"] for h in history], label="validation")
    if "raw_val_accuracy" in history[0]:
        ax1.plot(epochs, [h["raw_val_loss"] for h in history], "--", label="validation, raw")
        ax2.plot(epochs, [100 * h["raw_val_accuracy"] for h in history], "--",
                 label="validation, raw weights")
    ax2.set_title("top-1 accuracy (%)")
    ax3.plot(epochs, [h["lr"] for h in history])
    ax3.set_title("learning rate")
    for ax in (ax1, ax2, ax3):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    ax1.legend()
    ax2.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def write_history(run_dir: Path, history: list[dict]) -> None:
    """history.json and history.csv (every column any row has; older rows leave new ones empty)."""
    write_text_atomic(run_dir / HISTORY, json.dumps(history, indent=1))
    columns = list(dict.fromkeys(key for row in history for key in row))
    with replacing(run_dir / HISTORY_CSV) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)


def _epoch_row(epoch: int, logs: dict, optimizer, plan: dict, seconds: float,
               paused: float = 0.0) -> dict:
    """One history row from Keras' epoch logs.

    ``seconds`` is the epoch's wall time, ``paused`` the part of it the process was
    stopped; images/s is over the time it ran.
    """
    return {
        "epoch": epoch + 1,
        "step": int(optimizer.iterations.numpy()),
        "lr": float(optimizer.learning_rate.numpy()),
        "loss": float(logs["loss"]), "accuracy": float(logs["accuracy"]),
        "val_loss": float(logs["val_loss"]),
        "val_accuracy": float(logs["val_accuracy"]),
        "val_top5": float(logs["val_top5"]),
        "seconds": round(seconds, 2),
        "paused_seconds": round(paused, 2),
        "images_per_s": round(plan["steps_per_epoch"] * plan["batch_size"]
                              / max(seconds - paused, 1e-9), 1),
    }


def _averaged_row(row: dict, model, val_ds, batches: list[np.ndarray]) -> dict:
    """``row`` with the averaged weights' validation; the raw weights' kept as ``raw_val_*``."""
    with averaged(model, batches):
        scores = model.evaluate(val_ds, verbose=0, return_dict=True)
    raw = {f"raw_{key}": row[key] for key in ("val_loss", "val_accuracy", "val_top5")}
    return {**row, "val_loss": float(scores["loss"]),
            "val_accuracy": float(scores["accuracy"]), "val_top5": float(scores["top5"]), **raw}


def _epoch_line(row: dict, plan: dict, improved: bool) -> str:
    """The train.log line of one finished epoch."""
    eta = active_seconds(row) * (plan["epochs"] - row["epoch"])
    raw = (f"  (raw {100 * row['raw_val_accuracy']:.2f}%)" if "raw_val_accuracy" in row
           else "")
    return (f"epoch {row['epoch']}/{plan['epochs']}  loss {row['loss']:.4f}  "
            f"acc {100 * row['accuracy']:.2f}%  val_acc {100 * row['val_accuracy']:.2f}%{raw}  "
            f"top5 {100 * row['val_top5']:.2f}%  lr {row['lr']:.5f}  "
            f"{row['images_per_s']:.0f} img/s  {row['seconds']:.0f}s"
            + (f" ({row['paused_seconds']:.0f}s paused)" if row.get("paused_seconds") else "")
            + f"  eta {eta / 60:.1f} min"
            + ("  *best" if improved else ""))


class _ProgressBar:
    """The per-epoch step bar on a terminal (nothing elsewhere)."""

    def __init__(self, plan: dict, show: bool):
        self.plan, self.show, self.bar, self.t0 = plan, show, None, time.perf_counter()
        self.pauses, self.paused0 = PauseClock(), 0.0

    def start(self, epoch: int) -> None:
        self.t0, self.paused0 = time.perf_counter(), self.pauses.paused()
        if self.show:
            from tqdm import tqdm

            self.bar = tqdm(total=self.plan["steps_per_epoch"], leave=False,
                            desc=f"epoch {epoch + 1}/{self.plan['epochs']}", unit="step",
                            dynamic_ncols=True)

    def step(self, batch: int, logs: dict) -> None:
        if self.bar is not None:  # images/s over the time the job ran, as the log's
            ran = time.perf_counter() - self.t0 - (self.pauses.paused() - self.paused0)
            rate = (batch + 1) * self.plan["batch_size"] / max(ran, 1e-9)
            self.bar.set_postfix(loss=f"{logs['loss']:.3f}", acc=f"{logs['accuracy']:.3f}",
                                 img_s=f"{rate:.0f}")
            self.bar.update(1)

    def close(self) -> tuple[float, float]:
        """Close the bar; the seconds since :meth:`start`, and how many of them were paused."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        return time.perf_counter() - self.t0, self.pauses.paused() - self.paused0


class _Checkpointer:
    """After each epoch: history, a new best's weights, the checkpoint, then the best
    weights put in place and the state, in that order.

    A resume trusts the checkpoint's step count and drops any history row beyond
    it, so a kill anywhere in between loses at most this epoch. A new best's weights
    are written under their epoch's name before the checkpoint and renamed after it,
    so ``best.weights.npz`` always holds the best epoch that the history keeps
    (:func:`settle_best_weights` finishes a rename a kill cut short).
    """

    def __init__(self, run_dir: Path, history: list[dict], best: float,
                 batches: list[np.ndarray] | None = None):
        self.run_dir, self.history, self.best, self.batches = run_dir, history, best, batches

    def save(self, model, row: dict) -> bool:
        """Record ``row`` and save ``model``; whether it is the best so far."""
        self.history.append(row)
        improved = row["val_accuracy"] > self.best
        write_history(self.run_dir, self.history)
        pending = self.run_dir / f"{_PENDING_BEST}{row['epoch']}.npz"
        if improved:
            self.best = row["val_accuracy"]
            save_weights_atomic(shipped_weights(model, self.batches), pending)
        save_model_atomic(model, self.run_dir / CHECKPOINT)  # the epoch is kept
        if improved:
            os.replace(pending, self.run_dir / BEST_WEIGHTS)
        write_text_atomic(self.run_dir / STATE, json.dumps(
            {"epochs_done": row["epoch"], "best_val_accuracy": self.best, "finished": False},
            indent=1))
        return improved


@functools.cache
def _epoch_callback_class():
    """The Keras callback class, made once (Keras is imported only when training)."""
    import keras

    class EpochCallback(keras.callbacks.Callback):
        """Progress bar, checkpoint, curves and log line at each epoch."""

        def __init__(self, run_dir: Path, plan: dict, history: list[dict], best: float,
                     log: Callable[[str], None], show_bar: bool, val_ds,
                     batches: list[np.ndarray] | None):
            super().__init__()
            self.run_dir, self.plan, self.log, self.val_ds = run_dir, plan, log, val_ds
            self.progress = _ProgressBar(plan, show_bar)
            self.checkpoints = _Checkpointer(run_dir, history, best, batches)

        def on_train_begin(self, logs=None):
            self.progress.pauses.start()

        def on_train_end(self, logs=None):
            self.progress.pauses.stop()

        def on_epoch_begin(self, epoch, logs=None):
            self.progress.start(epoch)

        def on_train_batch_end(self, batch, logs=None):
            self.progress.step(batch, logs)

        def on_epoch_end(self, epoch, logs=None):
            seconds, paused = self.progress.close()
            row = _epoch_row(epoch, logs, self.model.optimizer, self.plan, seconds, paused)
            if uses_average(self.model):
                row = _averaged_row(row, self.model, self.val_ds, self.checkpoints.batches)
            improved = self.checkpoints.save(self.model, row)
            plot_curves(self.checkpoints.history, self.run_dir / "curves.png")
            self.log(_epoch_line(row, self.plan, improved))

    return EpochCallback


def epoch_callback(run_dir: Path, plan: dict, history: list[dict], best: float,
                   log: Callable[[str], None], show_bar: bool, val_ds,
                   batches: list[np.ndarray] | None = None):
    """A Keras callback that checkpoints, plots and logs every epoch of a run.

    ``batches``: the recalibration sample of a run that keeps a weight average.
    """
    return _epoch_callback_class()(run_dir, plan, history, best, log, show_bar, val_ds,
                                   batches)
