"""The ``henet-edge`` group and what every command shares: the one way to fail,
quiet native logs, JSON output and the grouped ``--help``."""

from __future__ import annotations

import functools
import inspect
import json
import math
import os
import sys
from pathlib import Path

import click

from henet_edge import HenetEdgeError, UsageError, __version__
from henet_edge.henet_keras.registry import model_names
from henet_edge.plots import png_path

MODEL_CHOICES = model_names()
_SEED = click.IntRange(0, 2**32 - 1)  # numpy and TensorFlow both take this range
THREADS = click.IntRange(1, 64)  # interpreter threads
TOP_K = click.IntRange(min=1)  # labels shown per image (at most the model's classes)


class _Seconds(click.FloatRange):
    """A finite number of seconds, 0 or more (``inf`` and ``nan`` pass a plain range)."""

    name = "seconds"

    def convert(self, value, param, ctx):
        seconds = super().convert(value, param, ctx)
        if not math.isfinite(seconds):
            self.fail(f"{value!r} is not a finite number of seconds", param, ctx)
        return seconds


SECONDS = _Seconds(0)
TIMEOUT = _Seconds(0, min_open=True)  # a wait that must be able to end


class PlotPath(click.Path):
    """A ``--plot`` value, as the file it names: a folder (one that exists, or any path
    ending in a slash) gets ``default_name`` inside it, a name without a suffix ``.png``."""

    def __init__(self, default_name: str) -> None:
        super().__init__(dir_okay=True)
        self.default_name = default_name

    def convert(self, value, param, ctx) -> Path:
        path = os.path.expanduser(os.fspath(super().convert(value, param, ctx)))
        return png_path(path, self.default_name)


def _quiet_tensorflow() -> None:
    from henet_edge.henet_keras.tf_env import prepare_tensorflow

    prepare_tensorflow()


def timing_options(runs: int, each: str):
    """``--runs`` (default ``runs``), ``--repeats``, ``--core`` and ``--json``, as a
    script that times models side by side on one pinned core takes them; ``each``
    names what one pass times (``"model"``, ``"conv and precision"``)."""
    options = (
        click.option("--runs", type=click.IntRange(1), default=runs, show_default=True,
                     help=f"Timed passes per repeat of each {each}."),
        click.option("--repeats", type=click.IntRange(1), default=5, show_default=True,
                     help="Repeats, the models interleaved."),
        click.option("--core", type=int, default=None,
                     help="CPU core to pin to [the highest-numbered allowed core]."),
        click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON."),
    )

    def decorate(command):
        for option in reversed(options):
            command = option(command)
        return command
    return decorate


def script_help(doc: str) -> str:
    """A script's module docstring as its click ``--help`` text, every paragraph kept.

    Prose paragraphs are rewrapped by click; example command lines, lists and
    indented tables keep their layout (click's ``\\b`` marker). A bare
    ``Usage::`` heading is dropped (click prints its own usage line) and reST's
    double backquotes become single ones.
    """
    paragraphs = []
    for para in inspect.cleandoc(doc).replace("``", "`").split("\n\n"):
        para = para.strip("\n")
        if para.strip() == "Usage::":
            continue
        if para.endswith("::"):
            para = para[:-1]
        lines = para.splitlines()
        laid_out = any(line[:1].isspace() or line.lstrip()[:2] in ("- ", "* ") for line in lines)
        paragraphs.append("\b\n" + para if laid_out else para)
    return "\n\n".join(paragraphs)


def user_errors(fn):
    """The one way a command fails: a project error becomes one line on stderr.

    A :class:`~henet_edge.UsageError` (a command line that cannot work) exits 2
    with the usage, like click's own; every other
    :class:`~henet_edge.HenetEdgeError` exits 1; Ctrl-C exits 130. Command
    bodies raise these instead of calling ``sys.exit``.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UsageError as exc:
            raise click.UsageError(str(exc)) from None
        except HenetEdgeError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


def quiet_logs(fn=None, *, add_option: bool = True):
    """Hide TensorFlow's, the converter's and XNNPACK's own logs unless ``--verbose``.

    With ``add_option=False`` the command's existing ``--verbose`` decides.
    """
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            from henet_edge.henet_keras.tf_env import quiet_native_logs

            verbose = kwargs.pop("verbose") if add_option else kwargs.get("verbose", False)
            with quiet_native_logs(verbose):
                return fn(*args, **kwargs)

        if add_option:
            wrapper = click.option(
                "--verbose", is_flag=True,
                help="Show TensorFlow's, the converter's and XNNPACK's own logs.")(wrapper)
        return wrapper

    return decorate(fn) if fn is not None else decorate


def _err(message: str) -> None:
    """One line on stderr (progress, notes): stdout stays the result."""
    click.echo(message, err=True)


def _warn_loudly(message: str) -> None:
    click.secho(f"*** WARNING: {message} ***", fg="red", bold=True, err=True)


def emit_json(data) -> None:
    click.echo(json.dumps(data, indent=1, default=str))


COMMAND_GROUPS = (
    ("Start here", ("demo",)),
    ("Desktop (train and convert)", ("profile", "train", "evaluate", "calibrate", "convert",
                                     "compare")),
    ("Deploy (to devices over SSH)", ("deploy", "status", "rollback", "remote")),
    ("Device (on the Pi)", ("classify", "camera", "bench", "serve", "service", "doctor",
                            "selftest")),
)


class GroupedCommands(click.Group):
    """``--help`` lists every command under its group, with its whole summary line."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        listed = {name for _, names in COMMAND_GROUPS for name in names}
        groups = [(title, list(names)) for title, names in COMMAND_GROUPS]
        others = [n for n in self.list_commands(ctx) if n not in listed]
        if others:
            groups.append(("Other", others))
        for title, names in groups:
            rows = []
            for name in names:
                command = self.get_command(ctx, name)
                if command is not None and not command.hidden:
                    rows.append((name, command.get_short_help_str(limit=1000)))
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


@click.group(cls=GroupedCommands,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="henet-edge")
def main() -> None:
    """Train HENet, convert it to TFLite, and run it on a Raspberry Pi.

    Run `henet-edge COMMAND --help` for each command's options.
    """
