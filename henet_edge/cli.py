"""The ``henet-edge`` command line: thin shells over library functions.

Nothing here imports TensorFlow at module import time; commands that need it
import it when they run, so ``henet-edge classify`` on a Pi starts fast.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import click

from henet_edge import HenetEdgeError, __version__

MODEL_CHOICES = ("henet", "shufflenet")


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def user_errors(fn):
    """Turn the project's user-facing errors into one line on stderr and exit 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except HenetEdgeError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


def emit_json(data) -> None:
    click.echo(json.dumps(data, indent=1, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="henet-edge")
def main() -> None:
    """Train HENet, convert it to TFLite, and run it on a Raspberry Pi.

    \b
    Desktop:  profile, train, evaluate, calibrate, convert, deploy, compare
    Device:   classify, camera, bench, doctor

    Run `henet-edge COMMAND --help` for each command's options.
    """


# --------------------------------------------------------------------------- profile
@main.command()
@click.option("--model", "model_name", default="henet", show_default=True,
              help="henet or shufflenet.")
@click.option("--repeat", default=3, show_default=True, help="Stride-1 blocks per stage.")
@click.option("--classes", default=10, show_default=True)
@click.option("--input-size", default=31, show_default=True)
@click.option("--width", "width_multiplier", default=1.0, show_default=True,
              help="Width multiplier (HENet only); groups are re-derived per block.")
@click.option("--layers/--no-layers", "show_layers", default=True, show_default=True,
              help="Print the per-layer table.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@user_errors
def profile(model_name, repeat, classes, input_size, width_multiplier, show_layers, as_json):
    """Params and MACs per layer, real and in the paper's counting convention.

    \b
    Real: trainable params as built (grouped kernels, no conv bias, BN gamma
    and beta, FC) and multiply-accumulates of every conv and FC layer.
    Paper: convs counted as dense (groups ignored) + conv bias + 2 BN values
    per channel + FC; MACs with the first block of each stage counted with 2C
    inputs. This convention reproduces the paper's Table 3 to the unit.
    """
    _check_model_args(model_name, repeat, classes)
    _quiet_tensorflow()
    from henet_edge.henet_keras import build_model
    from henet_edge.henet_keras.profile import summarize

    kwargs = {"repeat": repeat, "classes": classes, "input_size": input_size}
    if model_name == "henet":
        kwargs["width_multiplier"] = width_multiplier
    try:
        model = build_model(model_name, **kwargs)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    summary = summarize(model, conv_bias=model_name == "henet")
    if as_json:
        emit_json(summary)
        return
    if show_layers:
        click.echo(f"{'layer':<18}{'kind':<16}{'output':>12}{'g':>4}{'params':>9}"
                   f"{'MACs':>11}{'paper params':>14}{'paper MACs':>12}")
        for row in summary["layers"]:
            shape = "x".join(str(d) for d in row["output_shape"])
            click.echo(f"{row['name']:<18}{row['kind']:<16}{shape:>12}{row['groups']:>4}"
                       f"{row['params']:>9,}{row['macs']:>11,}{row['paper_params']:>14,}"
                       f"{row['paper_macs']:>12,}")
        click.echo()
    click.echo(f"{summary['model']}: {summary['params']:,} params, "
               f"{summary['macs'] / 1e6:.3f} M MACs (real)")
    click.echo(f"{'':{len(summary['model'])}}  {summary['paper_params']:,} params, "
               f"{summary['paper_macs'] / 1e6:.3f} M MACs (paper convention)")
    click.echo("The paper's columns count convs as dense with a bias, so they overstate "
               "what a grouped model stores.")


def _check_model_args(model_name: str, repeat: int, classes: int) -> None:
    if model_name not in MODEL_CHOICES:
        raise click.ClickException(
            f"unknown model {model_name!r}; choose one of: {', '.join(MODEL_CHOICES)}")
    if repeat < 1:
        raise click.ClickException(f"--repeat must be at least 1, got {repeat}")
    if classes < 2:
        raise click.ClickException(f"--classes must be at least 2, got {classes}")


if __name__ == "__main__":  # pragma: no cover
    main()
