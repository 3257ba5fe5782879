"""The default model's lineage: every run that made it, as one resumable queue.

The shipped HENet-r3 is not one run but a chain: a long run from scratch, other
runs to teach it, then distillation rounds that start from (``init_from``) and
learn from (``teachers``) earlier runs. A :class:`Stage` names those by stage, so
the queue (:func:`.campaign.run_queue`) makes them in order, each an ordinary run
folder ``<root>/<stage name>/``. Like the equal-budget campaign it resumes where it
stopped and refuses a folder made with other settings, naming the difference.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .campaign import QueuedRun
from .run import RunError, TrainConfig


@dataclass(frozen=True)
class Stage:
    """One run of a lineage: what it trains, and which earlier stages it builds on."""

    name: str  # its folder under the lineage's root
    model: str = "henet"
    repeat: int = 3
    epochs: int = 30
    lr: float | None = None  # the recipe's unless set
    weight_decay: float | None = None
    ema: float | None = None
    mixup: float | None = None
    init_from: str | None = None  # an earlier stage, whose weights it starts from
    teachers: tuple[str, ...] = ()  # earlier stages it distils from
    teacher_flip: bool = False
    distill_temperature: float | None = None  # the default's unless set
    augment: str | None = None  # the data's own unless set
    qat: bool = False


_KD = {"lr": 0.02, "weight_decay": 1e-4}  # the distillation rounds restart at this lr and decay
_KD4_TEACHERS = ("henet-r3-long", "henet-r3-cifar10-longer", "shufflenet-r5-long",
                 "henet-r3-kd2")

# What made the shipped model (SHIPPED_STAGE) and the rounds trained since to beat it, in
# an order that trains every stage's donor and teachers first. The names are the
# folders under training/ that hold each run.
DEFAULT_LINEAGE: tuple[Stage, ...] = (
    Stage("henet-r3-long", epochs=150),
    Stage("equal-budget/henet-r4", repeat=4),
    Stage("equal-budget/shufflenet-r5", model="shufflenet", repeat=5),
    Stage("henet-r3-kd", **_KD, init_from="henet-r3-long",
          teachers=("henet-r3-long", "equal-budget/henet-r4", "equal-budget/shufflenet-r5")),
    Stage("henet-r3-cifar10"),
    Stage("henet-r3-cifar10-more", epochs=18, lr=0.05, init_from="henet-r3-cifar10"),
    Stage("henet-r3-cifar10-longer", epochs=40, lr=0.05, init_from="henet-r3-cifar10-more"),
    Stage("henet-r3-kd2", epochs=60, **_KD, ema=0.9995, init_from="henet-r3-kd",
          teachers=("henet-r3-long", "henet-r3-cifar10-longer",
                    "equal-budget/shufflenet-r5", "henet-r3-kd")),
    Stage("henet-r3-kd2-t1", epochs=10, lr=0.002, weight_decay=1e-4, augment="cifar",
          distill_temperature=1.0, init_from="henet-r3-kd2",
          teachers=("henet-r3-long", "henet-r3-cifar10-longer",
                    "equal-budget/shufflenet-r5", "henet-r3-kd")),
    Stage("henet-r3-kd3", epochs=60, **_KD, ema=0.9995, mixup=1.0, teacher_flip=True,
          init_from="henet-r3-kd2",
          teachers=("henet-r3-long", "henet-r3-cifar10-longer",
                    "equal-budget/shufflenet-r5", "henet-r3-kd2")),
    # Warm restarts stopped gaining near 87.7 %, 1.2-1.4 pt under their teachers even on
    # training images: a student that fits too little. So one long distillation from
    # scratch at the recipe's rate and decay, taught as the third round, by its teachers
    # with the third round's student in place of the second's.
    Stage("henet-r3-kd-scratch", epochs=200, ema=0.9995, mixup=1.0, teacher_flip=True,
          teachers=("henet-r3-long", "henet-r3-cifar10-longer",
                    "equal-budget/shufflenet-r5", "henet-r3-kd3")),
    # Each stronger set of teachers has lifted the student a little (the best four teach
    # at 89.3 %, their student scores 87.8 %): the floor needs stronger teachers.
    # ShuffleNet-r5 (103K parameters, 14.1 M MACs) scored 86.5 % after 30 epochs, where
    # HENet-r3 scored 83.8 %; this carries it on for 120 more (a warm restart at half the
    # recipe's rate), to teach the next round.
    Stage("shufflenet-r5-long", model="shufflenet", repeat=5, epochs=120, lr=0.05,
          init_from="equal-budget/shufflenet-r5"),
    # The third round again with one change, chosen before the teacher has finished (no pick
    # on validation): the longer ShuffleNet-r5 teaches in place of the 30-epoch one.
    Stage("henet-r3-kd4", epochs=60, **_KD, ema=0.9995, mixup=1.0, teacher_flip=True,
          init_from="henet-r3-kd2", teachers=_KD4_TEACHERS),
    Stage("henet-r3-kd4-t1", epochs=10, lr=0.002, weight_decay=1e-4, augment="cifar",
          distill_temperature=1.0, init_from="henet-r3-kd4", teachers=_KD4_TEACHERS),
    # henet-r3-kd-scratch's low-rate finish, as henet-r3-kd2-t1 finished henet-r3-kd2
    # (there +0.14 pt, within the noise): plain crops, sharp (T=1) targets, a restart at
    # lr 0.002 decaying to 0.
    Stage("henet-r3-kd-scratch-t1", epochs=10, lr=0.002, weight_decay=1e-4, augment="cifar",
          distill_temperature=1.0, init_from="henet-r3-kd-scratch",
          teachers=("henet-r3-long", "henet-r3-cifar10-longer",
                    "equal-budget/shufflenet-r5", "henet-r3-kd3")),
)

SHIPPED_STAGE = "henet-r3-kd2-t1"  # whose best.keras the packaged default bundle converts


@dataclass(frozen=True)
class Lineage:
    root: Path
    data: str
    stages: tuple[Stage, ...] = DEFAULT_LINEAGE
    recipe: str = "fast"
    seed: int = 0
    val_split: float = 0.1
    limit: int | None = None
    batch_size: int | None = None  # the recipe's unless set

    def __post_init__(self) -> None:
        """Refuse a stage that builds on a stage not queued before it."""
        seen: set[str] = set()
        for stage in self.stages:
            later = [name for name in (stage.init_from, *stage.teachers)
                     if name is not None and name not in seen]
            if later:
                raise RunError(f"stage {stage.name!r} builds on {', '.join(later)}, which "
                               "no earlier stage makes")
            seen.add(stage.name)

    def run_dir(self, name: str) -> Path:
        return Path(self.root) / name

    def config(self, stage: Stage) -> TrainConfig:
        return TrainConfig(
            data=self.data, model=stage.model, repeat=stage.repeat, recipe=self.recipe,
            epochs=stage.epochs, seed=self.seed, val_split=self.val_split, limit=self.limit,
            batch_size=self.batch_size, lr=stage.lr, weight_decay=stage.weight_decay,
            ema=stage.ema, mixup=stage.mixup, teacher_flip=stage.teacher_flip,
            distill_temperature=stage.distill_temperature,
            augment=stage.augment, qat=stage.qat,
            init_from=None if stage.init_from is None else str(self.run_dir(stage.init_from)),
            teachers=[str(self.run_dir(t)) for t in stage.teachers] or None)

    def queue(self) -> list[QueuedRun]:
        return [(stage.name, self.run_dir(stage.name), self.config(stage))
                for stage in self.stages]
