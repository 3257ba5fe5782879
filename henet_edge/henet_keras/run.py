"""A run folder as a type: its config, history, models and validation split.

Everything that reads a run folder (train's resume and ``--init-from``,
evaluate, convert, the campaign and its report) goes through :class:`Run`, so
the layout is known in one place. No TensorFlow here.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from henet_edge import HenetEdgeError
from henet_edge.device.preprocess import DEFAULT, Preprocessing

from .data import (
    AUGMENTS,
    NAMED_SETS,
    DataSource,
    ImageSet,
    load_source,
    same_source,
    split_validation,
)
from .pauses import active_seconds
from .registry import model_spec

CONFIG, HISTORY, STATE, SUMMARY = "config.json", "history.json", "state.json", "summary.json"
FINAL_MODEL, BEST_MODEL, CHECKPOINT = "model.keras", "best.keras", "checkpoint.keras"
LOCK = ".train.lock"  # held (flock) by the train writing the run
TRAIN_LOG, HISTORY_CSV = "train.log", "history.csv"
HELD_OUT_KEYS = ("data", "seed", "val_split", "limit")  # what decides the validation split
LAST_N = 5  # the paper's statistic: the mean of the last five validation evaluations


def holds_no_run(folder: Path) -> bool:
    """Whether a new run may start in ``folder``: absent, or holding no more than what a
    start that failed leaves (its log, and the lock of a train now running there)."""
    return not folder.exists() or all(p.name in (TRAIN_LOG, LOCK) for p in folder.iterdir())


class RunError(HenetEdgeError, ValueError):
    """A run folder that cannot be used as asked, with a message for the user."""


@dataclass
class TrainConfig:
    data: str | None
    model: str | None = "henet"
    repeat: int | None = 3
    width_multiplier: float = 1.0
    recipe: str = "fast"
    epochs: int | None = None
    iterations: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    seed: int = 0
    val_split: float = 0.1
    formulation: str = "auto"  # auto | masked | native
    jit_compile: bool = False
    limit: int | None = None  # use only the first N training images (quick checks)
    preprocessing: dict = field(default_factory=DEFAULT.to_dict)
    init_from: str | None = None  # start from this run's (or .keras file's) weights
    ema: float | None = None  # ship the moving average of the weights, with this decay
    mixup: float | None = None  # blend training images and targets, weights ~ Beta(this, this)
    weight_decay: float | None = None  # Caffe-convention decay; None means the recipe's
    teachers: list[str] | None = None  # finished runs whose soft labels the run learns from
    distill_weight: float | None = None  # share of the loss on them; None: the default
    distill_temperature: float | None = None
    teacher_flip: bool = False  # teachers label each image and its mirror image, averaged
    augment: str | None = None  # one of AUGMENTS; None: the data's own (cifar; svhn none)
    qat: bool = False  # train with int8 rounding simulated (quantization-aware, see .qat)

    def __post_init__(self) -> None:
        """Refuse zero or negative sizes (``None`` means the recipe's value)."""
        for name in ("repeat", "epochs", "iterations", "batch_size", "limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise RunError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        for name, option in (("width_multiplier", "--width"), ("lr", "--lr")):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise RunError(f"{option} must be above 0, got {value}")
        if self.model is not None:
            model_spec(self.model).check_width(self.width_multiplier)
        if self.weight_decay is not None and not self.weight_decay >= 0:
            raise RunError(f"--weight-decay must be at least 0, got {self.weight_decay}")
        if self.ema is not None and not 0 < self.ema < 1:
            raise RunError(f"--ema must be above 0 and below 1, got {self.ema}")
        if self.mixup is not None and not self.mixup > 0:
            raise RunError(f"--mixup must be above 0, got {self.mixup}")
        if self.distill_weight is not None and not 0 <= self.distill_weight <= 1:
            raise RunError(f"--distill-weight must be from 0 to 1, got {self.distill_weight}")
        if self.distill_temperature is not None and not self.distill_temperature > 0:
            raise RunError("--distill-temperature must be above 0, got "
                           f"{self.distill_temperature}")
        if not self.teachers and (self.distill_weight is not None
                                  or self.distill_temperature is not None):
            raise RunError("--distill-weight and --distill-temperature need a --teacher")
        if not self.teachers and self.teacher_flip:
            raise RunError("--teacher-flip needs a --teacher")
        if self.augment is not None and self.augment not in AUGMENTS:
            raise RunError(f"--augment must be one of {', '.join(AUGMENTS)}, "
                           f"got {self.augment!r}")
        if not 0 <= self.val_split < 1:
            raise RunError(f"--val-split must be at least 0 and below 1, got {self.val_split}")


def absolute_source(spec: str | None) -> str | None:
    """A data path (or ``--init-from``) as an absolute path; named sets stay names."""
    if spec is None or spec in NAMED_SETS:
        return spec
    return str(Path(spec).expanduser().absolute())


RELATIVE_TO_RUN = "relative to the run folder"  # config.json's "paths" of newer runs


def recorded_path(spec: str | None, run_dir: Path) -> str | None:
    """How a run records a data path (or ``--init-from``): relative to the run folder.

    So a run folder names no machine's folders, and moving a checkout together with
    its data keeps the run working. Named sets stay names.
    """
    if spec is None or spec in NAMED_SETS:
        return spec
    return os.path.relpath(Path(spec).expanduser().absolute(), Path(run_dir).absolute())


def shown_path(spec: str | None) -> str | None:
    """A data path as logs show it: relative to the current folder (names stay names)."""
    if spec is None or spec in NAMED_SETS:
        return spec
    return os.path.relpath(Path(spec).expanduser().absolute())


def held_out_differences(run: Run, config: TrainConfig,
                         keys: tuple[str, ...] = HELD_OUT_KEYS) -> list[str]:
    """Each of ``keys`` where ``run``'s saved setting differs from ``config``'s.

    With the default keys: each setting that gives ``run`` another validation split.
    """
    return [f"{key} ({saved!r})" for key, saved, _ in run.differences(config, keys)]


def load_runs_on_one_split(run_dirs: Iterable[Path]) -> list[Run]:
    """Load runs to score side by side; refuse one that held out other images than the first."""
    runs = [Run.load(d) for d in run_dirs]
    for run in runs[1:]:
        differ = held_out_differences(run, runs[0].train_config)
        if differ:
            raise RunError(f"{run.root} held out other images than {runs[0].root}: "
                           + ", ".join(differ))
    return runs


def mean_of_last(history: list[dict], n: int = LAST_N) -> float | None:
    """The mean validation accuracy of the last ``n`` epochs (None without history)."""
    last = [h["val_accuracy"] for h in history[-n:]]
    return float(np.mean(last)) if last else None


def training_hours(history: list[dict]) -> float:
    """Hours the epochs ran, less any time the job was stopped (where a row records it)."""
    return sum(active_seconds(h) for h in history) / 3600


def hours_left(history: list[dict], planned: int | None, recent: int = 5) -> float | None:
    """Hours the planned epochs still to run would take at the pace of the ``recent`` last.

    The pace is the median of their times less pauses, so one disturbed epoch does not
    move it; ``None`` with no epoch or no plan to go by.
    """
    if not history or planned is None:
        return None
    pace = statistics.median(active_seconds(h) for h in history[-recent:])
    return max(planned - len(history), 0) * pace / 3600


def load_training_data(config: TrainConfig, progress=None) -> tuple[DataSource, ImageSet, ImageSet]:
    """(source, training set, validation set) exactly as the run with ``config`` sees them.

    The source's ``augment`` is the run's training augmentation (``--augment`` or the
    data's own).
    """
    spec = Preprocessing.from_dict(config.preprocessing)
    source = load_source(config.data, spec.canonical_size, progress=progress)
    if config.augment is not None:
        source = replace(source, augment=config.augment)
    train = source.train
    if config.limit is not None:
        rng = np.random.default_rng(config.seed)
        train = train.subset(np.sort(rng.permutation(len(train))[: config.limit]))
    if source.test is not None:
        return source, train, source.test
    train, val = split_validation(train, config.val_split, config.seed)
    return source, train, val


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunError(f"{path}: cannot be read as JSON ({exc})") from None


PATH_SETTINGS = ("init_from", "teachers")  # saved relative to the run, compared resolved


def _normalised(paths: str | list[str] | None) -> str | list[str] | None:
    """Run folders as absolute, normalised paths (one, or a list), so spellings compare."""
    if paths is None or isinstance(paths, str):
        return None if paths is None else os.path.normpath(Path(paths).absolute())
    return [os.path.normpath(Path(p).absolute()) for p in paths] or None


@dataclass
class Run:
    """A run folder made by ``henet-edge train``."""

    root: Path
    config: dict

    @staticmethod
    def is_run(path: str | Path) -> bool:
        return (Path(path) / CONFIG).is_file()

    @classmethod
    def load(cls, path: str | Path) -> Run:
        root = Path(path)
        if not cls.is_run(root):
            raise RunError(f"{root}: not a run folder (no {CONFIG})")
        return cls(root, _read_json(root / CONFIG))

    # -- what it was made with
    def differences(self, wanted: TrainConfig,
                    keys: Iterable[str]) -> list[tuple[str, Any, Any]]:
        """``(key, saved, wanted)`` for each of ``keys`` where the run's settings differ
        from ``wanted``: paths compared resolved, the data as :func:`same_source` does.
        A setting newer than the run's config counts as its default, as it trained."""
        resolved = self.train_config
        saved = {**json.loads(json.dumps(asdict(resolved))), "data": self.data_path,
                 **{key: _normalised(getattr(resolved, key)) for key in PATH_SETTINGS}}
        mine = json.loads(json.dumps(asdict(wanted)))  # tuples as lists, as saved
        mine.update({key: _normalised(getattr(wanted, key)) for key in PATH_SETTINGS})
        return [(key, saved.get(key), mine[key]) for key in keys
                if saved.get(key) != mine[key]
                and not (key == "data" and same_source(saved.get(key), mine[key]))]

    @property
    def saved_train(self) -> dict:
        """The ``train`` settings exactly as saved."""
        return self.config["train"]

    @property
    def train_config(self) -> TrainConfig:
        """The saved settings, with the data path resolved (see :meth:`data_path`).

        A family without a width multiplier was built at width 1, whatever an older
        ``train`` recorded (it used to record ``--width`` and ignore it).
        """
        saved = dict(self.saved_train)
        if saved.get("model") and not model_spec(saved["model"]).accepts_width:
            saved["width_multiplier"] = 1.0
        teachers = saved.get("teachers")
        return TrainConfig(**{**saved, "data": self.data_path,
                              "init_from": self._saved_path("init_from"),
                              "teachers": None if teachers is None else [
                                  self._resolved(t) for t in teachers]})

    @property
    def labels(self) -> list[str]:
        return list(self.config["labels"])

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing.from_dict(self.config["preprocessing"])

    @property
    def data_path(self) -> str | None:
        """The training data; an old run's relative path is found where it was made.

        Runs record it relative to the run folder (``"paths"`` in config.json says
        so), some absolute. The oldest recorded the path as given: it is
        tried against the folder ``train`` ran in (known from the summary's
        ``run_dir`` when that was relative), then each folder above the run,
        then the current folder.
        """
        return self._saved_path("data")

    def _saved_path(self, key: str) -> str | None:
        return self._resolved(self.saved_train.get(key))

    def _resolved(self, data: str | None) -> str | None:
        """A path as this run saved it, found from the current folder."""
        if data is None or data in NAMED_SETS or Path(data).expanduser().is_absolute():
            return data
        if self.config.get("paths") == RELATIVE_TO_RUN:
            return os.path.normpath(self.root.absolute() / data)
        for base in self._bases():
            if (base / data).exists():
                return str(base / data)
        return data

    def _bases(self) -> list[Path]:
        here = self.root.absolute()
        bases = []
        given = (self.summary or {}).get("run_dir")
        if given and not Path(given).is_absolute() and ".." not in Path(given).parts:
            parts = Path(given).parts
            if here.parts[-len(parts):] == parts:
                bases.append(Path(*here.parts[:-len(parts)]))
        return bases + list(here.parents) + [Path.cwd()]

    # -- what it holds
    @property
    def history(self) -> list[dict]:
        path = self.root / HISTORY
        return _read_json(path) if path.is_file() else []

    @property
    def state(self) -> dict:
        path = self.root / STATE
        return _read_json(path) if path.is_file() else {}

    @property
    def finished(self) -> bool:
        return bool(self.state.get("finished"))

    @property
    def summary(self) -> dict | None:
        path = self.root / SUMMARY
        return _read_json(path) if path.is_file() else None

    @property
    def final_model(self) -> Path:
        return self.root / FINAL_MODEL

    @property
    def best_model(self) -> Path:
        return self.root / BEST_MODEL

    @property
    def checkpoint(self) -> Path:
        return self.root / CHECKPOINT

    def model_path(self) -> Path:
        """best.keras, else model.keras; a run with neither is still training."""
        for path in (self.best_model, self.final_model):
            if path.is_file():
                return path
        raise RunError(f"{self.root}: the run has no {FINAL_MODEL} yet (still training?)")

    def mean_last5(self) -> float | None:
        return mean_of_last(self.history)

    @property
    def validation_kind(self) -> str:
        """What the run validated on: its held-out split, or the data's own test split."""
        return self.config["data"]["validation_kind"]

    def validation(self) -> tuple[ImageSet, str]:
        """The run's own validation (or test) set, rebuilt from its config, and a description."""
        data = self.data_path
        if data not in NAMED_SETS and data is not None and not Path(data).exists():
            raise RunError(f"{self.root}: the run's data {data} is not here, and its validation "
                           "split is rebuilt from it; put the data there (a run records it "
                           "relative to its folder), or give the images to measure on")
        _, train, val = load_training_data(self.train_config)
        self.check_data(train, val)
        return val, f"{shown_path(self.data_path)}, {self.validation_kind}"

    def check_data(self, train: ImageSet, val: ImageSet) -> None:
        """Refuse data that no longer gives the run's split: images added or removed
        move the seeded split, and validation images would be trained on or missed."""
        recorded, labels = self.config.get("data", {}), self.config.get("labels")
        now = {"train": len(train), "validation": len(val)}
        changed = [f"{key} {recorded[key]} then, {now[key]} now" for key in now
                   if key in recorded and recorded[key] != now[key]]
        if labels is not None and labels != train.class_names:
            changed.append(f"classes {labels} then, {train.class_names} now")
        if changed:
            raise RunError(f"{self.root}: its data ({shown_path(self.data_path)}) no longer "
                           f"gives the run's split ({'; '.join(changed)}): its validation "
                           "images would not be the ones it held out")
