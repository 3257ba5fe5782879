"""Training runs: data pipeline, fast grouped-conv formulation, checkpoints, resume.

A run folder holds:

- ``config.json``: model, recipe, data source, preprocessing, labels, seed, versions
- ``checkpoint.keras`` + ``state.json``: the last finished epoch (with optimiser state)
- ``model.keras`` / ``best.keras``: final and best-validation weights in the native
  grouped-conv form (plain Keras layers, ready for conversion)
- ``history.json`` / ``history.csv``, ``curves.png`` and ``train.log``

Every file is written to a temporary name and renamed into place, so a
``kill -9`` never leaves a half-written model; ``--resume`` continues from the
last checkpoint with the same schedule as an uninterrupted run.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from henet_edge import HenetEdgeError
from henet_edge.device.preprocess import DEFAULT, Preprocessing
from henet_edge.storage import replacing, utc_timestamp, write_text_atomic

from .data import DataError, DataSource, ImageSet, load_source, split_validation
from .recipes import RECIPES, RecipeSchedule
from .registry import model_names, model_spec
from .tf_env import library_versions, prepare_tensorflow


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
        if not 0 <= self.val_split < 1:
            raise RunError(f"--val-split must be at least 0 and below 1, got {self.val_split}")


def plural(count: int, noun: str) -> str:
    """``1 epoch``, ``2 epochs``: a count with its noun in the right number."""
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def save_model_atomic(model, path: Path) -> None:
    with replacing(path, ".keras") as tmp:
        model.save(tmp)


def save_weights_atomic(model, path: Path) -> None:
    """All weights as ``w0..wN`` arrays (shared by the masked and native forms)."""
    with replacing(path, ".npz") as tmp:
        np.savez(tmp, **{f"w{i}": w for i, w in enumerate(model.get_weights())})


def pick_formulation(requested: str) -> str:
    """``masked`` on CPUs (TensorFlow's grouped-conv gradient is slow there), else native."""
    if requested != "auto":
        return requested
    import tensorflow as tf

    return "native" if tf.config.list_physical_devices("GPU") else "masked"


def build_for(config: TrainConfig, classes: int, *, fast_groups: bool, weight_decay: float = 0.0,
              batch_size: int | None = None):
    spec = model_spec(config.model)
    kwargs = {"repeat": config.repeat, "classes": classes, "batch_size": batch_size,
              "fast_groups": fast_groups, "weight_decay": weight_decay,
              "input_size": Preprocessing.from_dict(config.preprocessing).input_size}
    if spec.accepts_width:
        kwargs["width_multiplier"] = config.width_multiplier
    return spec.build(**kwargs)


def make_datasets(train: ImageSet, val: ImageSet, *, spec: Preprocessing, augment: str,
                  batch_size: int, steps_per_epoch: int, first_epoch: int, last_epoch: int,
                  seed: int, classes: int):
    """Deterministic tf.data pipelines; epoch ``e`` sees the permutation seeded by (seed, e)."""
    import tensorflow as tf

    from henet_edge.device.preprocess import normalize

    n_used = steps_per_epoch * batch_size
    order = np.concatenate([
        np.random.default_rng([seed, e]).permutation(len(train))[:n_used]
        for e in range(first_epoch, last_epoch)
    ]).astype(np.int64)
    positions = np.arange(first_epoch * n_used, last_epoch * n_used, dtype=np.int64)
    images = tf.constant(train.images)
    labels = tf.one_hot(train.labels, classes)
    size, pad = spec.input_size, 4

    def load(index, position):
        image = tf.gather(images, index)
        if augment == "cifar":
            key = tf.stack([tf.constant(seed, tf.int64), position])
            image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
            image = tf.image.stateless_random_crop(image, (size, size, 3), seed=key)
            image = tf.image.stateless_random_flip_left_right(image, seed=key + 1)
        else:
            o = spec.crop_offset()
            image = image[o:o + size, o:o + size, :]
        return normalize(tf.cast(image, tf.float32), spec), tf.gather(labels, index)

    train_ds = (tf.data.Dataset.from_tensor_slices((order, positions))
                .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                .batch(batch_size, drop_remainder=True)
                .prefetch(tf.data.AUTOTUNE))
    o = spec.crop_offset()
    val_x = normalize(val.images[:, o:o + size, o:o + size, :], spec).astype(np.float32)
    val_ds = (tf.data.Dataset.from_tensor_slices((val_x, tf.one_hot(val.labels, classes)))
              .batch(500).cache().prefetch(tf.data.AUTOTUNE))
    return train_ds, val_ds


def plot_curves(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(13, 3.8))
    ax1.plot(epochs, [h["loss"] for h in history], label="train")
    ax1.plot(epochs, [h["val_loss"] for h in history], label="validation")
    ax1.set_title("loss")
    ax2.plot(epochs, [100 * h["accuracy"] for h in history], label="train")
    ax2.plot(epochs, [100 * h["val_accuracy"] for h in history], label="validation")
    ax2.set_title("top-1 accuracy (%)")
    ax3.plot(epochs, [h["lr"] for h in history])
    ax3.set_title("learning rate")
    for ax in (ax1, ax2, ax3):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    ax1.legend()
    ax2.legend()
    fig.tight_layout()
    with replacing(path, ".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def _write_history(run_dir: Path, history: list[dict]) -> None:
    write_text_atomic(run_dir / "history.json", json.dumps(history, indent=1))
    with replacing(run_dir / "history.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def _plan(config: TrainConfig, n_train: int) -> dict:
    recipe = RECIPES[config.recipe]
    batch = recipe.batch_size if config.batch_size is None else config.batch_size
    steps = n_train // batch
    if steps < 1:
        raise DataError(f"{n_train} training images is less than one batch of {batch}")
    iterations = config.iterations
    if iterations is None and config.epochs is None:
        iterations = recipe.iterations
    epochs = config.epochs
    if epochs is None:
        epochs = math.ceil(iterations / steps) if iterations is not None else recipe.epochs
    total = epochs * steps if iterations is None else iterations
    epochs = math.ceil(total / steps)
    return {"batch_size": batch, "steps_per_epoch": steps, "epochs": epochs,
            "total_steps": total, "lr": recipe.lr if config.lr is None else config.lr,
            "warmup_steps": int(recipe.warmup_epochs * steps),
            "milestones": [int(f * total) for f in recipe.milestones],
            "weight_decay": recipe.weight_decay, "label_smoothing": recipe.label_smoothing,
            "schedule": recipe.schedule}


def load_training_data(config: TrainConfig, progress=None) -> tuple[DataSource, ImageSet, ImageSet]:
    spec = Preprocessing.from_dict(config.preprocessing)
    source = load_source(config.data, spec.canonical_size, progress=progress)
    train = source.train
    if config.limit is not None:
        rng = np.random.default_rng(config.seed)
        train = train.subset(np.sort(rng.permutation(len(train))[: config.limit]))
    if source.test is not None:
        return source, train, source.test
    train, val = split_validation(train, config.val_split, config.seed)
    return source, train, val


def run_validation(run_config: dict) -> tuple[ImageSet, str]:
    """A run's own validation (or test) set, rebuilt from its config, and a description."""
    _, _, val = load_training_data(TrainConfig(**run_config["train"]))
    return val, f"{run_config['train']['data']}, {run_config['data']['validation_kind']}"


class _EpochLogger:
    """Keras callback: progress bar, per-epoch history, checkpoints, best weights."""

    def __new__(cls, *args, **kwargs):  # built lazily so importing this module stays light
        import keras

        class Impl(keras.callbacks.Callback):
            def __init__(self, run_dir: Path, plan: dict, history: list[dict], best: float,
                         log: Callable, show_bar: bool):
                super().__init__()
                self.run_dir, self.plan, self.history = run_dir, plan, history
                self.best, self.log, self.show_bar = best, log, show_bar

            def on_epoch_begin(self, epoch, logs=None):
                self.t0 = time.perf_counter()
                self.bar = None
                if self.show_bar:
                    from tqdm import tqdm

                    self.bar = tqdm(total=self.plan["steps_per_epoch"], leave=False,
                                    desc=f"epoch {epoch + 1}/{self.plan['epochs']}",
                                    unit="step", dynamic_ncols=True)

            def on_train_batch_end(self, batch, logs=None):
                if self.bar is not None:
                    elapsed = time.perf_counter() - self.t0
                    rate = (batch + 1) * self.plan["batch_size"] / max(elapsed, 1e-9)
                    self.bar.set_postfix(loss=f"{logs['loss']:.3f}",
                                         acc=f"{logs['accuracy']:.3f}", img_s=f"{rate:.0f}")
                    self.bar.update(1)

            def on_epoch_end(self, epoch, logs=None):
                if self.bar is not None:
                    self.bar.close()
                seconds = time.perf_counter() - self.t0
                opt = self.model.optimizer
                row = {
                    "epoch": epoch + 1,
                    "step": int(opt.iterations.numpy()),
                    "lr": float(opt.learning_rate.numpy()),
                    "loss": float(logs["loss"]), "accuracy": float(logs["accuracy"]),
                    "val_loss": float(logs["val_loss"]),
                    "val_accuracy": float(logs["val_accuracy"]),
                    "val_top5": float(logs["val_top5"]),
                    "seconds": round(seconds, 2),
                    "images_per_s": round(self.plan["steps_per_epoch"]
                                          * self.plan["batch_size"] / seconds, 1),
                }
                self.history.append(row)
                improved = row["val_accuracy"] > self.best
                # History first, then the checkpoint: a resume trusts the checkpoint's step
                # count and drops any history row beyond it, so a kill anywhere in between
                # loses at most this epoch.
                _write_history(self.run_dir, self.history)
                save_model_atomic(self.model, self.run_dir / "checkpoint.keras")
                if improved:
                    self.best = row["val_accuracy"]
                    save_weights_atomic(self.model, self.run_dir / "best.weights.npz")
                write_text_atomic(self.run_dir / "state.json", json.dumps(
                    {"epochs_done": epoch + 1, "best_val_accuracy": self.best,
                     "finished": False}, indent=1))
                plot_curves(self.history, self.run_dir / "curves.png")
                eta = seconds * (self.plan["epochs"] - epoch - 1)
                self.log(f"epoch {epoch + 1}/{self.plan['epochs']}  loss {row['loss']:.4f}  "
                         f"acc {100 * row['accuracy']:.2f}%  val_acc "
                         f"{100 * row['val_accuracy']:.2f}%  top5 {100 * row['val_top5']:.2f}%  "
                         f"lr {row['lr']:.5f}  {row['images_per_s']:.0f} img/s  "
                         f"{seconds:.0f}s  eta {eta / 60:.1f} min" + ("  *best" if improved
                                                                     else ""))

        return Impl(*args, **kwargs)


def train(config: TrainConfig, run_dir: Path, *, resume: bool = False, show_bar: bool = True,
          echo: Callable[[str], None] = print) -> dict:
    """Train (or resume) a run in ``run_dir``; returns the run summary."""
    run_dir = Path(run_dir)
    state_path = run_dir / "state.json"
    if resume:
        if not (run_dir / "config.json").exists():
            raise RunError(f"{run_dir}: not a run folder (no config.json)")
        saved = json.loads((run_dir / "config.json").read_text())
        state = json.loads(state_path.read_text()) if state_path.exists() else {}
        if state.get("finished"):
            raise RunError(f"{run_dir}: this run has already finished; start a new run folder")
        for key in ("model", "repeat"):
            mine = getattr(config, key)
            if mine is not None and saved["train"].get(key) != mine:
                raise RunError(f"{run_dir}: run was made with {key}={saved['train'][key]!r}, "
                               f"not {mine!r}")
        config = TrainConfig(**saved["train"])
    elif run_dir.exists() and any(p.name != "train.log" for p in run_dir.iterdir()):
        raise RunError(f"{run_dir}: folder exists and is not empty (use --resume to continue "
                       "it, or pick a new --out)")
    if config.model not in model_names():
        raise RunError(f"unknown model {config.model!r}; choose one of: "
                       f"{', '.join(model_names())}")
    if config.recipe not in RECIPES:
        raise RunError(f"unknown recipe {config.recipe!r}; choose {', '.join(RECIPES)}")
    if config.init_from and not resume:
        init_source(config)  # refuse a bad donor before the run folder exists
    run_dir.mkdir(parents=True, exist_ok=True)
    log_file = open(run_dir / "train.log", "a")  # noqa: SIM115 - lives for the run

    def log(msg: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        log_file.write(f"{stamp}  {msg}\n")
        log_file.flush()
        echo(msg)

    try:
        return _train(config, run_dir, resume, show_bar, log)
    finally:
        log_file.close()


def _train(config: TrainConfig, run_dir: Path, resume: bool, show_bar: bool,
           log: Callable[[str], None]) -> dict:
    prepare_tensorflow()  # before TensorFlow is first imported
    import keras
    import tensorflow as tf

    from . import layers as _layers  # noqa: F401 - registers custom layers for loading

    spec = Preprocessing.from_dict(config.preprocessing)
    t_load = time.perf_counter()
    source, train_set, val_set = load_training_data(config)
    classes = len(train_set.class_names)
    plan = _plan(config, len(train_set))
    formulation = pick_formulation(config.formulation)
    log(f"data: {source.name} ({source.kind}): {len(train_set)} train, {len(val_set)} "
        f"{'test' if source.test is not None else 'validation'}, {classes} classes, "
        f"{len(source.train.skipped)} skipped, loaded in {time.perf_counter() - t_load:.1f}s")

    history: list[dict] = []
    best = -1.0
    first_epoch = 0
    gpus = tf.config.list_physical_devices("GPU")
    strategy = tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    with strategy.scope():
        if resume and (run_dir / "checkpoint.keras").exists():
            _remove_partial_writes(run_dir)
            model = keras.models.load_model(run_dir / "checkpoint.keras")
            # The checkpoint's own step count is the truth: state.json may lag it by one
            # epoch when a kill came between the two writes.
            first_epoch = int(model.optimizer.iterations.numpy()) // plan["steps_per_epoch"]
            history = json.loads((run_dir / "history.json").read_text())[:first_epoch]
            if len(history) < first_epoch:
                raise RunError(f"{run_dir}: checkpoint is at epoch {first_epoch} but "
                               f"history.json has {plural(len(history), 'epoch')}")
            best = max((h["val_accuracy"] for h in history), default=-1.0)
            log(f"resuming after epoch {first_epoch} (step {int(model.optimizer.iterations)})")
        else:
            model = build_for(config, classes, fast_groups=formulation == "masked",
                              weight_decay=plan["weight_decay"])
            if config.init_from:
                init_weights(model, config)
                log(f"weights initialised from {config.init_from}")
            schedule = RecipeSchedule(plan["lr"], plan["total_steps"], plan["warmup_steps"],
                                      plan["schedule"], tuple(plan["milestones"]))
            model.compile(
                optimizer=keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True),
                loss=keras.losses.CategoricalCrossentropy(
                    from_logits=True, label_smoothing=plan["label_smoothing"]),
                metrics=[keras.metrics.CategoricalAccuracy(name="accuracy"),
                         keras.metrics.TopKCategoricalAccuracy(5, name="top5")],
                jit_compile=config.jit_compile,
            )
            full = {"train": asdict(config), "plan": plan, "formulation": formulation,
                    "recipe": RECIPES[config.recipe].to_dict(), "labels": train_set.class_names,
                    "classes": classes, "preprocessing": spec.to_dict(),
                    "augment": source.augment, "data": {
                        "source": source.name, "kind": source.kind, "train": len(train_set),
                        "validation": len(val_set),
                        "validation_kind": "test" if source.test is not None else
                        f"seeded {config.val_split:.0%} split (seed {config.seed})",
                        "skipped": len(source.train.skipped)},
                    "versions": library_versions(),
                    "created": utc_timestamp()}
            write_text_atomic(run_dir / "config.json", json.dumps(full, indent=1))
            log(f"model {model.name}: {model.count_params():,} weights, {formulation} "
                f"grouped convs; {plural(plan['epochs'], 'epoch')} x "
                f"{plural(plan['steps_per_epoch'], 'step')} "
                f"of {plan['batch_size']}, recipe {config.recipe}")
    if first_epoch >= plan["epochs"]:
        # Killed after its last epoch but before the final models were written.
        log(f"all {plural(plan['epochs'], 'epoch')} are done; writing the final models")
        return finish_run(config, run_dir, model, classes, history, best, log)
    train_ds, val_ds = make_datasets(
        train_set, val_set, spec=spec, augment=source.augment, batch_size=plan["batch_size"],
        steps_per_epoch=plan["steps_per_epoch"], first_epoch=first_epoch,
        last_epoch=plan["epochs"], seed=config.seed, classes=classes)
    logger = _EpochLogger(run_dir, plan, history, best, log, show_bar and sys.stderr.isatty())
    model.fit(train_ds, validation_data=val_ds, epochs=plan["epochs"],
              initial_epoch=first_epoch, steps_per_epoch=plan["steps_per_epoch"],
              callbacks=[logger], verbose=0, shuffle=False)
    return finish_run(config, run_dir, model, classes, logger.history, logger.best, log)


def _remove_partial_writes(run_dir: Path) -> None:
    """Temporary files left by a save that was killed before its rename."""
    for tmp in run_dir.glob(".*.tmp*"):
        tmp.unlink()


def init_source(config: TrainConfig) -> Path:
    """The ``.keras`` file ``--init-from`` names, checked before any work.

    A run folder must have held out the same validation images (same data, seed,
    split and limit): otherwise its weights have been trained on this run's
    validation images.
    """
    source = Path(config.init_from)
    path = source / "model.keras" if source.is_dir() else source
    if not path.is_file() and not source.is_dir():
        raise RunError(f"--init-from {source}: no such run folder or .keras file")
    if source.is_dir():
        if not (source / "config.json").is_file() or not path.is_file():
            raise RunError(f"--init-from {source}: not a finished run folder (no config.json "
                           "and model.keras)")
        theirs = json.loads((source / "config.json").read_text())["train"]
        keys = ("data", "seed", "val_split", "limit", "model", "repeat", "width_multiplier")
        differ = [k for k in keys if theirs.get(k) != getattr(config, k)
                  and not (k == "data" and _same_file(theirs.get(k), config.data))]
        if differ:
            raise RunError(f"--init-from {source}: that run used a different "
                           + ", ".join(f"{k} ({theirs.get(k)!r})" for k in differ)
                           + "; its weights may have seen this run's validation images")
    return path


def init_weights(model, config: TrainConfig) -> None:
    """Start ``model`` from the weights of ``--init-from`` (a finished run or a ``.keras``)."""
    import keras

    from . import layers as _layers  # noqa: F401 - registers custom layers for loading

    path = init_source(config)
    try:
        donor = keras.models.load_model(path, compile=False)
    except Exception as exc:  # any unreadable file is the user's input
        raise RunError(f"--init-from {path}: not a Keras model ({exc})") from None
    mine, given = model.get_weights(), donor.get_weights()
    if [w.shape for w in mine] != [w.shape for w in given]:
        raise RunError(f"--init-from {path}: its architecture does not match "
                       f"{config.model} repeat {config.repeat}")
    model.set_weights(given)


def _same_file(a: str | None, b: str | None) -> bool:
    return bool(a and b) and Path(a).resolve() == Path(b).resolve()


def to_native(model, config: TrainConfig, classes: int):
    """The same network with native ``Conv2D(groups=g)`` layers and identical weights."""
    native = build_for(config, classes, fast_groups=False)
    native.set_weights(model.get_weights())
    return native


def finish_run(config: TrainConfig, run_dir: Path, model, classes: int, history: list[dict],
               best: float, log: Callable[[str], None]) -> dict:
    native = to_native(model, config, classes)
    save_model_atomic(native, run_dir / "model.keras")
    if (run_dir / "best.weights.npz").exists():
        best_model = build_for(config, classes, fast_groups=False)
        with np.load(run_dir / "best.weights.npz") as z:
            best_model.set_weights([z[f"w{i}"] for i in range(len(z.files))])
        save_model_atomic(best_model, run_dir / "best.keras")
    last5 = [h["val_accuracy"] for h in history[-5:]]
    summary = {"run_dir": str(run_dir), "epochs": len(history),
               "final_val_accuracy": history[-1]["val_accuracy"],
               "best_val_accuracy": best,
               "mean_last5_val_accuracy": float(np.mean(last5)),
               "finished": True}
    write_text_atomic(run_dir / "state.json", json.dumps(
        {"epochs_done": len(history), "best_val_accuracy": best, "finished": True}, indent=1))
    write_text_atomic(run_dir / "summary.json", json.dumps(summary, indent=1))
    log(f"done: final val {100 * summary['final_val_accuracy']:.2f}%, best "
        f"{100 * best:.2f}%, mean of last 5 {100 * summary['mean_last5_val_accuracy']:.2f}%")
    return summary
