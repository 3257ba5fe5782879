"""A run folder around training: check a config against it before any TensorFlow
work, lock it for the run, and undo a start that failed before its config was written.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import IO

from .init_from import init_source
from .recipes import RECIPES
from .registry import model_names, run_name
from .run import LOCK, TRAIN_LOG, Run, RunError, TrainConfig, absolute_source, holds_no_run


def lock_run(run_dir: Path) -> IO[str]:
    """Hold ``run_dir``'s lock for the run: a second ``train`` on the same folder (two
    resumes, or two starts with one ``--out``) is refused instead of both writing it.
    A file system without locks (some network mounts) trains unlocked, as before."""
    lock = open(run_dir / LOCK, "a+")  # noqa: SIM115 - held for the run
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "another process"
        lock.close()
        raise RunError(f"{run_dir}: {holder} is training this run already; wait for it to "
                       "end (or stop it) before starting or resuming it again") from None
    except OSError as exc:
        if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            lock.close()
            raise
    lock.truncate(0)
    lock.write(f"train (pid {os.getpid()})")
    lock.flush()
    return lock


DEFAULT_MODEL, DEFAULT_REPEAT = "henet", 3  # what a new run trains when not told


def default_run_dir(model: str | None, repeat: int | None) -> Path:
    """``runs/<model>-r<repeat>-<time>``: where a new run goes without ``--out``."""
    model = DEFAULT_MODEL if model is None else model
    repeat = DEFAULT_REPEAT if repeat is None else repeat
    return Path("runs") / f"{run_name(model, repeat)}-{time.strftime('%Y%m%d-%H%M%S')}"


def checked_config(config: TrainConfig, run_dir: Path, resume: bool) -> TrainConfig:
    """The config to train with, checked before any folder or TensorFlow work."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"{run_dir}: exists and is not a folder")
    if resume:
        run = Run.load(run_dir)
        if run.finished:
            raise RunError(f"{run_dir}: this run has already finished; start a new run folder")
        differ = run.differences(config, _given(config))
        if differ:
            raise RunError(f"{run_dir}: run was made with " + "; ".join(
                f"{key}={saved!r}, not {mine!r}" for key, saved, mine in differ)
                + " (a resumed run keeps its own settings; nothing was changed)")
        config = run.train_config
    else:
        if config.data is None:
            raise RunError("--data is required (or --resume RUN_DIR)")
        if not holds_no_run(run_dir):
            raise RunError(f"{run_dir}: folder exists and is not empty (use --resume to "
                           "continue it, or pick a new --out)")
        # Absolute, so evaluate and convert find the data from any folder.
        config = replace(config, data=absolute_source(config.data),
                         init_from=absolute_source(config.init_from),
                         teachers=_absolute_all(config.teachers),
                         model=DEFAULT_MODEL if config.model is None else config.model,
                         repeat=DEFAULT_REPEAT if config.repeat is None else config.repeat)
    if config.model not in model_names():
        raise RunError(f"unknown model {config.model!r}; choose one of: "
                       f"{', '.join(model_names())}")
    if config.recipe not in RECIPES:
        raise RunError(f"unknown recipe {config.recipe!r}; choose {', '.join(RECIPES)}")
    if config.init_from and not resume:
        init_source(config)  # refuse a bad donor before the run folder exists
    return config


# Settings whose command-line default is a value: given only when they differ from it.
_VALUE_DEFAULTS = ("width_multiplier", "recipe", "seed", "val_split", "formulation",
                   "preprocessing", "jit_compile")


def _given(config: TrainConfig) -> list[str]:
    """The settings ``config`` states (to compare with a resumed run's): every one not
    left at None, False or, for those with a value as default, that value."""
    default = TrainConfig(data=None)
    return [f.name for f in fields(TrainConfig)
            if getattr(config, f.name) not in (None, False)
            and not (f.name in _VALUE_DEFAULTS
                     and getattr(config, f.name) == getattr(default, f.name))]


def _absolute_all(paths: list[str] | None) -> list[str] | None:
    return None if not paths else [absolute_source(p) for p in paths]


def make_folder(path: Path) -> Path | None:
    """``mkdir -p path``; the topmost folder it created (None if ``path`` existed)."""
    topmost = None
    for folder in (path, *path.parents):
        if folder.exists():
            break
        topmost = folder
    path.mkdir(parents=True, exist_ok=True)
    return topmost


def remove_failed_start(run_dir: Path, created: Path | None, log_existed: bool) -> None:
    """Undo a start that failed before writing its config: the folders or log it made."""
    if created is not None:
        shutil.rmtree(created, ignore_errors=True)
        return
    if not log_existed:
        (run_dir / TRAIN_LOG).unlink(missing_ok=True)
    (run_dir / LOCK).unlink(missing_ok=True)


def remove_partial_writes(run_dir: Path) -> None:
    """Temporary files left by a save that was killed before its rename."""
    for tmp in run_dir.glob(".*.tmp*"):
        tmp.unlink()
