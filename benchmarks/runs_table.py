"""Training runs side by side, from their own files: settings, best, final, mean of the last 5.

    python benchmarks/runs_table.py training/henet-r3-kd training/henet-r3-kd2 ...
    python benchmarks/runs_table.py training/henet-r3-* --json
    python benchmarks/runs_table.py training/henet-r3-long training/henet-r3-kd-scratch \
        --plot curves.png --from-epoch 10

Each lever in the README is judged by these figures against its control; this prints
them from each run's ``config.json`` and ``history.json`` (validation top-1 on the
run's held-out split; with ``--ema``, the raw weights' mean of the last 5 beside the
average's). Train hours leave out time the job was stopped where the run recorded it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from henet_edge.cli.base import user_errors  # noqa: E402
from henet_edge.henet_keras.run import Run  # noqa: E402
from henet_edge.henet_keras.run_table import markdown, plot_runs, run_row  # noqa: E402


@click.command()
@click.argument("run_dirs", nargs=-1, required=True,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also draw each run's validation top-1 (raw weights dashed) and learning "
                   "rate by epoch into this PNG.")
@click.option("--from-epoch", type=click.IntRange(1), default=1, show_default=True,
              help="With --plot: start the curves at this epoch (early epochs squash the "
                   "later ones).")
@user_errors
def main(run_dirs: tuple[Path, ...], as_json: bool, plot: Path | None, from_epoch: int) -> None:
    runs = [Run.load(d) for d in run_dirs]
    rows = [run_row(run) for run in runs]
    click.echo(json.dumps(rows, indent=1) if as_json else markdown(rows))
    if plot:
        plot_runs(runs, plot, from_epoch)
        click.echo(f"plot: {plot}", err=as_json)


if __name__ == "__main__":
    main()
