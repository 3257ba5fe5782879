"""The equal-budget campaign: every model of both families trained with one recipe.

A campaign is a queue of ordinary run folders, ``<root>/<family>-r<N>/``, all
made with the same recipe, seed, validation split and number of epochs (the
queue itself, :func:`run_queue`, also serves :mod:`.lineage`). Running
it again (after Ctrl-C, ``kill -9`` or a reboot) skips finished runs, resumes the
one in progress from its last complete checkpoint, and refuses any run folder
whose config differs from the campaign's, naming the difference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .registry import run_name
from .run import Run, RunError, TrainConfig, holds_no_run, hours_left
from .train import train

# In the order of priority: if time forces a cut, the first four are the minimum.
CAMPAIGN_MODELS: tuple[tuple[str, int], ...] = (
    ("henet", 2), ("henet", 3), ("shufflenet", 3), ("shufflenet", 5),
    ("henet", 4), ("shufflenet", 2), ("shufflenet", 4),
)
# The settings every run of one campaign must share.
SHARED_KEYS = ("data", "recipe", "epochs", "seed", "val_split", "limit", "batch_size", "lr",
               "model", "repeat", "width_multiplier", "preprocessing", "init_from", "ema",
               "mixup", "weight_decay", "teachers", "distill_weight", "distill_temperature",
               "teacher_flip", "augment", "qat")
QueuedRun = tuple[str, Path, TrainConfig]  # (name, run folder, the settings it must have)


@dataclass(frozen=True)
class Campaign:
    root: Path
    data: str
    recipe: str = "fast"
    epochs: int = 30
    seed: int = 0
    val_split: float = 0.1
    limit: int | None = None
    batch_size: int | None = None  # the recipe's unless set
    models: tuple[tuple[str, int], ...] = CAMPAIGN_MODELS

    def run_dir(self, family: str, repeat: int) -> Path:
        return Path(self.root) / run_name(family, repeat)

    def config(self, family: str, repeat: int) -> TrainConfig:
        return TrainConfig(data=self.data, model=family, repeat=repeat, recipe=self.recipe,
                           epochs=self.epochs, seed=self.seed, val_split=self.val_split,
                           limit=self.limit, batch_size=self.batch_size)

    def queue(self) -> list[QueuedRun]:
        return [(run_name(family, repeat), self.run_dir(family, repeat),
                 self.config(family, repeat)) for family, repeat in self.models]


def run_state(run_dir: Path) -> str:
    """``new``, ``finished`` or ``partial`` (started: a config exists)."""
    return _state(_started(run_dir))


def _started(run_dir: Path) -> Run | None:
    return Run.load(run_dir) if Run.is_run(run_dir) else None


def _state(run: Run | None) -> str:
    if run is None:
        return "new"
    return "finished" if run.finished else "partial"


def config_differences(run: Run, wanted: TrainConfig) -> list[str]:
    """Each shared setting where ``run``'s saved config differs from ``wanted``."""
    return [f"{key}: run has {saved!r}, campaign wants {mine!r}"
            for key, saved, mine in run.differences(wanted, SHARED_KEYS)]


def check_queue(queue: list[QueuedRun]) -> list[dict]:
    """Every queued run with its state; refuses (before any work) a run that differs."""
    rows = []
    for name, run_dir, wanted in queue:
        run = _started(run_dir)  # config.json read once per run
        state = _state(run)
        if run is not None:
            differ = config_differences(run, wanted)
            if differ:
                raise RunError(f"{run_dir}: made with other settings than this campaign ("
                               + "; ".join(differ) + "); nothing was changed. Use another "
                               "--root, or the campaign's settings.")
        elif not holds_no_run(run_dir):
            raise RunError(f"{run_dir}: folder exists, holds files and no config.json; "
                           "it is not a run folder this campaign made")
        row = {"run": name, "run_dir": str(run_dir), "state": state}
        rows.append(row if run is None else {**row, **progress(run)})
    return rows


def progress(run: Run) -> dict:
    """Epochs recorded of those planned, the best validation top-1 so far, hours to go."""
    history, planned = run.history, run.config.get("plan", {}).get("epochs")
    return {"epochs_done": len(history), "epochs": planned,
            "best_val_accuracy": max((h["val_accuracy"] for h in history), default=None),
            "hours_left": hours_left(history, planned)}


def run_queue(queue: list[QueuedRun], *, echo: Callable[[str], None] = print,
              show_bar: bool = True) -> list[dict]:
    """Train every queued run in order (checked first); returns each run's summary."""
    summaries = []
    for (name, run_dir, config), row in zip(queue, check_queue(queue), strict=True):
        if row["state"] == "finished":
            echo(f"{name}: finished, skipped")
            summaries.append(Run.load(run_dir).summary)
            continue
        echo(f"{name}: {'resuming' if row['state'] == 'partial' else 'starting'}")
        summaries.append(train(config, run_dir, resume=row["state"] == "partial", echo=echo,
                               show_bar=show_bar))
    return summaries


def check_campaign(campaign: Campaign) -> list[dict]:
    """Every queued model with its state; refuses (before any work) a run that differs."""
    return check_queue(campaign.queue())


def run_campaign(campaign: Campaign, *, echo: Callable[[str], None] = print,
                 show_bar: bool = True) -> list[dict]:
    """Train every queued model in order; returns each run's summary."""
    return run_queue(campaign.queue(), echo=echo, show_bar=show_bar)
