"""The default model's lineage: every run that made the shipped HENet-r3, as one queue.

    python benchmarks/default_model.py status  # each stage: finished, partial or new
    python benchmarks/default_model.py train   # run (or continue) the queue

The stages (``henet_edge.henet_keras.lineage.DEFAULT_LINEAGE``) are the run folders
under ``training/``: a 150-epoch run, two more teachers, then distillation rounds that
start from and learn from earlier stages. ``status`` on ``training/`` checks that each
committed run was made with exactly the settings listed; ``train --root NEW`` makes
the whole chain again (days on a 2-core CPU). Killed at any point, the same command
continues where it stopped; a folder made with other settings is refused, naming the
difference.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from henet_edge.cli.base import script_help, user_errors  # noqa: E402
from henet_edge.henet_keras.campaign import check_queue, run_queue  # noqa: E402
from henet_edge.henet_keras.lineage import Lineage  # noqa: E402


@click.command(help=script_help(__doc__))
@click.argument("action", type=click.Choice(["train", "status"]))
@click.option("--root", type=click.Path(file_okay=False, path_type=Path),
              default=Path("training"), show_default=True,
              help="Folder of the stages' run folders.")
@click.option("--data", default="../shared/data/cifar10-train-jpeg.tar.gz",
              show_default=True, help="Training images, as for `henet-edge train --data`.")
@click.option("--limit", type=click.IntRange(1), default=None,
              help="Use only N training images (a quick check).")
@user_errors
def main(action: str, root: Path, data: str, limit: int | None) -> None:
    queue = Lineage(root=root, data=data, limit=limit).queue()
    if action == "status":
        print(json.dumps(check_queue(queue), indent=1))
    else:
        from henet_edge.henet_keras.tf_env import prepare_tensorflow

        prepare_tensorflow()
        run_queue(queue, echo=lambda m: print(m, flush=True))


if __name__ == "__main__":
    main()
