"""Training recipes: optimiser, schedule and regularisation settings (no Keras import)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Recipe:
    name: str
    lr: float
    schedule: str  # "steps" or "cosine"
    batch_size: int
    weight_decay: float
    label_smoothing: float
    warmup_epochs: float
    iterations: int | None = None  # paper: fixed iteration budget
    epochs: int | None = None
    milestones: tuple[float, ...] = ()  # fractions of the run, for "steps"
    description: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


RECIPES = {
    "paper": Recipe(
        "paper", lr=0.01, schedule="steps", batch_size=128, weight_decay=5e-4,
        label_smoothing=0.0, warmup_epochs=0, iterations=65_000,
        milestones=(32_000 / 65_000, 48_000 / 65_000),
        description="SGD Nesterov 0.9, lr 0.01 x0.1 at 32k and 48k of 65k iterations, "
        "batch 128, weight decay 5e-4 (about 9 h on 2 CPU cores)",
    ),
    "fast": Recipe(
        "fast", lr=0.1, schedule="cosine", batch_size=128, weight_decay=5e-4,
        label_smoothing=0.1, warmup_epochs=2, epochs=30,
        description="SGD Nesterov 0.9, lr warm-up to 0.1 over 2 epochs then cosine to 0, "
        "label smoothing 0.1, weight decay 5e-4, batch 128, 30 epochs",
    ),
}


def __getattr__(name: str):
    """``RecipeSchedule`` lives in :mod:`.schedule`, imported only when asked (it needs Keras)."""
    if name == "RecipeSchedule":
        from .schedule import RecipeSchedule

        return RecipeSchedule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
