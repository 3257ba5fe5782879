"""Training recipes: optimiser, schedule and regularisation settings."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import keras


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


@keras.saving.register_keras_serializable(package="henet_edge")
class RecipeSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Step-indexed schedule: linear warm-up, then piecewise steps or cosine to 0.

    A function of the optimiser's iteration count only, so a resumed run
    follows exactly the schedule of an uninterrupted one.
    """

    def __init__(self, lr: float, total_steps: int, warmup_steps: int = 0,
                 schedule: str = "cosine", milestones: tuple[int, ...] = ()):
        self.lr = float(lr)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.schedule = schedule
        self.milestones = tuple(int(m) for m in milestones)

    def __call__(self, step):
        from keras import ops

        step = ops.cast(step, "float32")
        if self.schedule == "steps":
            factor = ops.convert_to_tensor(1.0)
            for m in self.milestones:
                factor = factor * ops.where(step >= m, 0.1, 1.0)
            lr = self.lr * factor
        else:
            span = max(1, self.total_steps - self.warmup_steps)
            progress = ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
            lr = 0.5 * self.lr * (1.0 + ops.cos(math.pi * progress))
        if self.warmup_steps:
            warm = self.lr * (step + 1.0) / self.warmup_steps
            lr = ops.where(step < self.warmup_steps, warm, lr)
        return lr

    def get_config(self):
        return {"lr": self.lr, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "schedule": self.schedule,
                "milestones": list(self.milestones)}
