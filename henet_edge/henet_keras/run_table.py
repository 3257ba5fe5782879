"""Runs side by side: how each was made and what it reached, read from its own files.

The figures a lever is judged by (best, final, mean of the last 5, and with ``--ema``
the raw weights' control) come from each run's ``history.json``, so a table of them
needs no retraining and no hand copying.
"""

from __future__ import annotations

from pathlib import Path

from henet_edge.plots import pyplot, save_figure

from .registry import run_name
from .run import LAST_N, Run, mean_of_last, shown_path, training_hours


def run_row(run: Run) -> dict:
    """One run: its settings, epochs, and validation top-1 (fractions) as it recorded them."""
    train, history = run.train_config, run.history
    plan = run.config.get("plan", {})
    scores = [h["val_accuracy"] for h in history]
    best = max(range(len(scores)), key=scores.__getitem__) if scores else None
    raw = [{"val_accuracy": h["raw_val_accuracy"]} for h in history if "raw_val_accuracy" in h]
    return {
        "run": shown_path(str(run.root)),
        "model": run_name(train.model, train.repeat)
                 + ("" if train.width_multiplier == 1.0 else f"-w{train.width_multiplier:g}"),
        "init_from": shown_path(train.init_from),
        "teachers": len(train.teachers or []),
        "settings": {"lr": plan.get("lr"), "weight_decay": plan.get("weight_decay"),
                     "ema": train.ema, "mixup": train.mixup,
                     "augment": run.config.get("augment"), "teacher_flip": train.teacher_flip,
                     "qat": train.qat},
        "epochs": len(history), "planned_epochs": plan.get("epochs"),
        "finished": run.finished,
        "best": None if best is None else scores[best],
        "best_epoch": None if best is None else history[best]["epoch"],
        "final": scores[-1] if scores else None,
        "mean_last5": mean_of_last(history),
        "raw_mean_last5": mean_of_last(raw) if len(raw) == len(history) else None,
        "train_hours": training_hours(history),
    }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f} %"


def _settings(row: dict) -> str:
    s = row["settings"]
    parts = [f"lr {s['lr']:g}" if s["lr"] is not None else None,
             f"wd {s['weight_decay']:g}" if s["weight_decay"] is not None else None,
             f"ema {s['ema']:g}" if s["ema"] else None,
             f"mixup {s['mixup']:g}" if s["mixup"] else None,
             f"augment {s['augment']}" if s["augment"] not in (None, "cifar") else None,
             "teacher flip" if s["teacher_flip"] else None,
             "quantization-aware" if s["qat"] else None,
             f"{row['teachers']} teachers" if row["teachers"] else None,
             f"from {Path(row['init_from']).name}" if row["init_from"] else None]
    return ", ".join(p for p in parts if p)


def markdown(rows: list[dict]) -> str:
    """The rows as a Markdown table (accuracies in percent)."""
    lines = [f"| run | model | settings | epochs | best (epoch) | final | mean of last "
             f"{LAST_N} | raw weights, mean of last {LAST_N} | train h |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        epochs = f"{r['epochs']}/{r['planned_epochs']}" if not r["finished"] else str(r["epochs"])
        best = "-" if r["best"] is None else f"{_pct(r['best'])} ({r['best_epoch']})"
        lines.append(f"| {r['run']} | {r['model']} | {_settings(r)} | {epochs} | {best} | "
                     f"{_pct(r['final'])} | {_pct(r['mean_last5'])} | "
                     f"{_pct(r['raw_mean_last5'])} | {r['train_hours']:.2f} |")
    return "\n".join(lines)


def plot_runs(runs: list[Run], path: Path, from_epoch: int = 1) -> list[str]:
    """Validation top-1 and learning rate by epoch, one colour per run, as a PNG.

    A run with ``--ema`` also gets its raw weights' top-1, dashed. Epochs are each
    run's own (a warm restart starts again at 1). Returns the labels of the accuracy
    lines drawn, in order.
    """
    plt = pyplot()
    fig, (acc, lr) = plt.subplots(1, 2, figsize=(12, 4.2), width_ratios=(2, 1))
    labels = []
    for run in runs:
        name = Path(run.root).name
        rows = [h for h in run.history if h["epoch"] >= from_epoch]
        epochs = [h["epoch"] for h in rows]
        (line,) = acc.plot(epochs, [100 * h["val_accuracy"] for h in rows], label=name)
        labels.append(name)
        if rows and all("raw_val_accuracy" in h for h in rows):
            acc.plot(epochs, [100 * h["raw_val_accuracy"] for h in rows], "--",
                     color=line.get_color(), alpha=0.6, label=f"{name} (raw weights)")
            labels.append(f"{name} (raw weights)")
        lr.plot(epochs, [h["lr"] for h in rows], color=line.get_color())
    acc.set_title("validation top-1 (%)")
    lr.set_title("learning rate")
    for ax in (acc, lr):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    acc.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return labels
