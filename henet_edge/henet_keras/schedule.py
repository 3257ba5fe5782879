"""The learning-rate schedule of every recipe, registered so checkpoints load."""

from __future__ import annotations

import math

import keras


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
