"""Training runs: start or resume, fit, the final models (see also :mod:`.run_folder`
for the checks and lock around a run folder, :mod:`.init_from` for ``--init-from``,
:mod:`.datasets` for what the network is fed and :mod:`.epochs` for each epoch's end).

A run folder holds:

- ``config.json``: model, recipe, data source, preprocessing, labels, seed, versions
- ``checkpoint.keras`` + ``state.json``: the last finished epoch (with optimiser state)
- ``model.keras`` / ``best.keras``: final and best-validation weights in the native
  grouped-conv form (plain Keras layers, ready for conversion)
- ``history.json`` / ``history.csv``, ``curves.png`` and ``train.log``

With ``--ema`` the run validates and ships the moving average of its weights
(see :mod:`.ema`); each history row also keeps the raw weights' validation
(``raw_val_*``), the control the average is measured against.

Every file is written to a temporary name and renamed into place, so a
``kill -9`` never leaves a half-written model; ``--resume`` continues from the
last checkpoint with the same schedule as an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from henet_edge.device.preprocess import Preprocessing
from henet_edge.storage import utc_timestamp, write_text_atomic

from .data import DataError, ImageSet
from .datasets import make_datasets, recalibration_batches
from .ema import shipped_weights
from .epochs import BEST_WEIGHTS, epoch_callback, save_model_atomic, settle_best_weights
from .init_from import init_weights
from .recipes import RECIPES
from .registry import model_spec
from .run import (
    BEST_MODEL,
    CHECKPOINT,
    CONFIG,
    FINAL_MODEL,
    RELATIVE_TO_RUN,
    STATE,
    SUMMARY,
    TRAIN_LOG,
    Run,
    RunError,
    TrainConfig,
    load_training_data,
    mean_of_last,
    recorded_path,
    shown_path,
)
from .run_folder import (
    checked_config,
    lock_run,
    make_folder,
    remove_failed_start,
    remove_partial_writes,
)
from .teachers import DEFAULT_TEMPERATURE, DEFAULT_WEIGHT, check_teachers
from .tf_env import library_versions, prepare_tensorflow


def plural(count: int, noun: str) -> str:
    """``1 epoch``, ``2 epochs``: a count with its noun in the right number."""
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


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
            # at most a quarter of the run: a 2-epoch run would end at the peak rate
            "warmup_steps": min(int(recipe.warmup_epochs * steps), total // 4),
            "milestones": [int(f * total) for f in recipe.milestones],
            "weight_decay": (recipe.weight_decay if config.weight_decay is None
                             else config.weight_decay),
            "label_smoothing": recipe.label_smoothing,
            "schedule": recipe.schedule, **_distillation_plan(config)}


def _distillation_plan(config: TrainConfig) -> dict:
    """The plan's ``distillation`` entry: teacher count, loss weight and temperature."""
    if not config.teachers:
        return {}
    weight = DEFAULT_WEIGHT if config.distill_weight is None else config.distill_weight
    temperature = (DEFAULT_TEMPERATURE if config.distill_temperature is None
                   else config.distill_temperature)
    flip = {"flip": True} if config.teacher_flip else {}  # older plans have no such key
    return {"distillation": {"teachers": len(config.teachers), "weight": weight,
                             "temperature": temperature, **flip}}


def train(config: TrainConfig, run_dir: Path, *, resume: bool = False, show_bar: bool = True,
          echo: Callable[[str], None] = print) -> dict:
    """Train (or resume) a run in ``run_dir``; returns the run summary.

    A start that fails before the run's config is written (bad data, one class,
    Ctrl-C while loading) removes what it created, so the same ``--out`` can be
    used again.
    """
    run_dir = Path(run_dir)
    config = checked_config(config, run_dir, resume)
    teachers = check_teachers(config)  # refuse unusable teachers before any folder exists
    created = make_folder(run_dir)
    lock = lock_run(run_dir)
    log_path = run_dir / TRAIN_LOG
    log_existed = log_path.exists()
    try:
        log_file = open(log_path, "a")  # noqa: SIM115 - lives for the run
    except BaseException:
        lock.close()
        raise

    def log(msg: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        log_file.write(f"{stamp}  {msg}\n")
        log_file.flush()
        echo(msg)

    try:
        return _train(config, teachers, run_dir, resume, show_bar, log)
    except BaseException:
        log_file.close()
        if not resume and not (run_dir / CONFIG).exists():
            remove_failed_start(run_dir, created, log_existed)
        raise
    finally:
        log_file.close()
        lock.close()


def _train(config: TrainConfig, teachers: list[Run], run_dir: Path, resume: bool,
           show_bar: bool, log: Callable[[str], None]) -> dict:
    prepare_tensorflow()  # before TensorFlow is first imported
    source, train_set, val_set = _load_data(config, log)
    classes = len(train_set.class_names)
    plan = _plan(config, len(train_set))
    formulation = pick_formulation(config.formulation)
    with _strategy().scope():
        if resume and (run_dir / CHECKPOINT).exists():
            run = Run.load(run_dir)
            run.check_data(train_set, val_set)
            model, history = _restore(run, plan, log)
        else:
            model = _start(config, classes, formulation, plan, log, train_set)
            history = []
            _write_config(run_dir, config, plan, formulation, source, train_set, val_set)
            log(f"model {model.name}: {_weights_phrase(model)}, {formulation} "
                f"grouped convs; {plural(plan['epochs'], 'epoch')} x "
                f"{plural(plan['steps_per_epoch'], 'step')} "
                f"of {plan['batch_size']}, recipe {config.recipe}"
                + ("" if config.ema is None else f", weight average (EMA) {config.ema}")
                + ("" if config.mixup is None else f", mixup alpha {config.mixup}")
                + (", quantization-aware (int8 rounding simulated)" if config.qat else ""))
    batches = (None if config.ema is None else recalibration_batches(
        train_set, Preprocessing.from_dict(config.preprocessing),
        batch_size=plan["batch_size"], seed=config.seed, augment=source.augment,
        mixup=config.mixup))
    first_epoch = len(history)
    best = max((h["val_accuracy"] for h in history), default=-1.0)
    if first_epoch >= plan["epochs"]:
        # Killed after its last epoch but before the final models were written.
        log(f"all {plural(plan['epochs'], 'epoch')} are done; writing the final models")
        return finish_run(config, run_dir, model, classes, history, best, log, batches)
    train_ds, val_ds = make_datasets(
        train_set, val_set, spec=Preprocessing.from_dict(config.preprocessing),
        augment=source.augment, batch_size=plan["batch_size"],
        steps_per_epoch=plan["steps_per_epoch"], first_epoch=first_epoch,
        last_epoch=plan["epochs"], seed=config.seed, classes=classes,
        soft_targets=soft_targets(teachers, classes, plan, log),
        mixup=config.mixup)
    callback = epoch_callback(run_dir, plan, history, best, log,
                              show_bar and sys.stderr.isatty(), val_ds, batches)
    model.fit(train_ds, validation_data=val_ds, epochs=plan["epochs"],
              initial_epoch=first_epoch, steps_per_epoch=plan["steps_per_epoch"],
              callbacks=[callback], verbose=0, shuffle=False)
    return finish_run(config, run_dir, model, classes, callback.checkpoints.history,
                      callback.checkpoints.best, log, batches)


def soft_targets(runs: list[Run], classes: int, plan: dict,
                  log: Callable[[str], None]) -> Callable | None:
    """The soft-label function of the checked teacher ``runs`` (None without teachers).

    Logs what the teachers are; ``plan`` is the run's plan (its ``distillation`` part).
    """
    if not runs:
        return None
    from .distill import load_teachers
    from .tflite_teachers import TFLiteTeachers

    distill = plan["distillation"]
    teachers = TFLiteTeachers(load_teachers(runs, classes), distill["temperature"],
                              flip=distill.get("flip", False))
    log(f"distilling from {plural(len(runs), 'teacher')} "
        f"({', '.join(shown_path(str(r.root)) for r in runs)}): weight {distill['weight']}, "
        f"temperature {distill['temperature']}"
        + (", each image and its mirror image" if distill.get("flip") else "")
        + f"; teachers run as float32 TFLite, {plural(teachers.threads, 'thread')}")
    return teachers


def _load_data(config: TrainConfig, log: Callable[[str], None]):
    t_load = time.perf_counter()
    source, train_set, val_set = load_training_data(config)
    log(f"data: {shown_path(source.name)} ({source.kind}): {len(train_set)} train, {len(val_set)} "
        f"{'test' if source.test is not None else 'validation'}, "
        f"{len(train_set.class_names)} classes, {len(source.train.skipped)} skipped, "
        f"loaded in {time.perf_counter() - t_load:.1f}s")
    return source, train_set, val_set


def _strategy():
    """All local GPUs mirrored, else the default (one device)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()


def _restore(run: Run, plan: dict, log: Callable[[str], None]) -> tuple[object, list]:
    """The checkpointed model of ``run`` and the history up to it."""
    import keras

    from . import distill as _distill  # noqa: F401 - registers the distillation loss
    from . import layers as _layers  # noqa: F401 - registers custom layers for loading
    from . import qat as _qat  # noqa: F401 - registers the quantization-aware layers

    run_dir = run.root
    remove_partial_writes(run_dir)
    model = keras.models.load_model(run_dir / CHECKPOINT)
    # The checkpoint's own step count is the truth: state.json may lag it by one
    # epoch when a kill came between the two writes.
    first_epoch = int(model.optimizer.iterations.numpy()) // plan["steps_per_epoch"]
    history = run.history[:first_epoch]
    if len(history) < first_epoch:
        raise RunError(f"{run_dir}: checkpoint is at epoch {first_epoch} but "
                       f"history.json has {plural(len(history), 'epoch')}")
    settle_best_weights(run_dir, first_epoch)
    log(f"resuming after epoch {first_epoch} (step {int(model.optimizer.iterations)})")
    return model, history


def _start(config: TrainConfig, classes: int, formulation: str, plan: dict,
           log: Callable[[str], None], train_set: ImageSet):
    """A new model (or ``--init-from``'s weights), compiled with the run's schedule.

    With ``--qat`` it is the quantization-aware copy, its int8 ranges calibrated on
    the starting weights (:mod:`.qat`).
    """
    import keras

    from .schedule import RecipeSchedule

    keras.utils.set_random_seed(config.seed)  # --seed fixes the initial weights too
    model = build_for(config, classes, fast_groups=formulation == "masked",
                      weight_decay=plan["weight_decay"])
    if config.init_from:
        init_weights(model, config)
        log(f"weights initialised from {shown_path(config.init_from)}")
    if config.qat:
        model = _quantization_aware(model, config, train_set, log)
    schedule = RecipeSchedule(plan["lr"], plan["total_steps"], plan["warmup_steps"],
                              plan["schedule"], tuple(plan["milestones"]))
    average = {} if config.ema is None else {"use_ema": True, "ema_momentum": config.ema}
    model.compile(
        optimizer=keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True, **average),
        **_loss_and_metrics(plan, classes), jit_compile=config.jit_compile,
    )
    return model


def _quantization_aware(model, config: TrainConfig, train_set: ImageSet,
                        log: Callable[[str], None]):
    """``model``'s quantization-aware copy, ranges calibrated on centre-cropped training images."""
    from .qat import CALIBRATION_IMAGES, calibrated_ranges, quantization_aware

    images = recalibration_batches(train_set, Preprocessing.from_dict(config.preprocessing),
                                   batch_size=250, seed=config.seed, augment="none",
                                   images=CALIBRATION_IMAGES)
    ranges = calibrated_ranges(model, images)
    log(f"quantization-aware: int8 rounding simulated on {len(ranges)} tensors and every "
        f"kernel, ranges from {sum(len(b) for b in images):,} training images")
    return quantization_aware(model, ranges)


def _loss_and_metrics(plan: dict, classes: int) -> dict:
    """Cross-entropy and accuracy; with teachers, their distillation forms (:mod:`.distill`)."""
    import keras

    distill = plan.get("distillation")
    if distill is None:
        return {"loss": keras.losses.CategoricalCrossentropy(
                    from_logits=True, label_smoothing=plan["label_smoothing"]),
                "metrics": [keras.metrics.CategoricalAccuracy(name="accuracy"),
                            keras.metrics.TopKCategoricalAccuracy(5, name="top5")]}
    from .distill import DistillationLoss, LabelAccuracy

    return {"loss": DistillationLoss(classes, distill["weight"], distill["temperature"],
                                     plan["label_smoothing"]),
            "metrics": [LabelAccuracy(classes, 1, name="accuracy"),
                        LabelAccuracy(classes, 5, name="top5")]}


def _write_config(run_dir: Path, config: TrainConfig, plan: dict, formulation: str,
                  source, train_set: ImageSet, val_set: ImageSet) -> None:
    """config.json: everything needed to rebuild the run's data, model and schedule."""
    train = {**asdict(config), "data": recorded_path(config.data, run_dir),
             "init_from": recorded_path(config.init_from, run_dir),
             "teachers": None if not config.teachers else [
                 recorded_path(t, run_dir) for t in config.teachers]}
    full = {"train": train, "paths": RELATIVE_TO_RUN, "plan": plan, "formulation": formulation,
            "recipe": RECIPES[config.recipe].to_dict(), "labels": train_set.class_names,
            "classes": len(train_set.class_names),
            "preprocessing": Preprocessing.from_dict(config.preprocessing).to_dict(),
            "augment": source.augment, "data": {
                "source": recorded_path(source.name, run_dir), "kind": source.kind,
                "train": len(train_set), "validation": len(val_set),
                "validation_kind": "test" if source.test is not None else
                f"seeded {config.val_split:.0%} split (seed {config.seed})",
                "skipped": len(source.train.skipped)},
            "versions": library_versions(),
            "created": utc_timestamp()}
    write_text_atomic(run_dir / CONFIG, json.dumps(full, indent=1))


def _weights_phrase(model) -> str:
    """What the model stores, said so that it matches ``henet-edge profile``."""
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    return (f"{trainable:,} trainable params ({model.count_params():,} weights with the "
            "batch-norm moving statistics)")


def to_native(model, config: TrainConfig, classes: int,
              batches: list[np.ndarray] | None = None):
    """The same network with native ``Conv2D(groups=g)`` layers and the weights it ships."""
    native = build_for(config, classes, fast_groups=False)
    native.set_weights(shipped_weights(model, batches))
    return native


def finish_run(config: TrainConfig, run_dir: Path, model, classes: int, history: list[dict],
               best: float, log: Callable[[str], None],
               batches: list[np.ndarray] | None = None) -> dict:
    native = to_native(model, config, classes, batches)
    save_model_atomic(native, run_dir / FINAL_MODEL)
    if (run_dir / BEST_WEIGHTS).exists():
        best_model = build_for(config, classes, fast_groups=False)
        with np.load(run_dir / BEST_WEIGHTS) as z:
            best_model.set_weights([z[f"w{i}"] for i in range(len(z.files))])
        save_model_atomic(best_model, run_dir / BEST_MODEL)
    summary = {"run_dir": str(run_dir), "epochs": len(history),
               "final_val_accuracy": history[-1]["val_accuracy"],
               "best_val_accuracy": best,
               "mean_last5_val_accuracy": mean_of_last(history),
               "finished": True}
    write_text_atomic(run_dir / SUMMARY, json.dumps(summary, indent=1))
    write_text_atomic(run_dir / STATE, json.dumps(  # last: "finished" has its summary
        {"epochs_done": len(history), "best_val_accuracy": best, "finished": True}, indent=1))
    log(f"done: final val {100 * summary['final_val_accuracy']:.2f}%, best "
        f"{100 * best:.2f}%, mean of last {min(5, len(history))} "
        f"{100 * summary['mean_last5_val_accuracy']:.2f}%")
    return summary
