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

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from henet_edge import HenetEdgeError  # noqa: E402
from henet_edge.henet_keras.campaign import check_queue, run_queue  # noqa: E402
from henet_edge.henet_keras.lineage import Lineage  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["train", "status"])
    parser.add_argument("--root", type=Path, default=Path("training"),
                        help="folder of the stages' run folders [%(default)s]")
    parser.add_argument("--data", default="../shared/data/cifar10-train-jpeg.tar.gz",
                        help="training images, as for `henet-edge train --data` "
                             "[%(default)s]")
    parser.add_argument("--limit", type=int, default=None,
                        help="use only N training images (a quick check)")
    args = parser.parse_args()
    try:
        queue = Lineage(root=args.root, data=args.data, limit=args.limit).queue()
        if args.action == "status":
            print(json.dumps(check_queue(queue), indent=1))
        else:
            from henet_edge.henet_keras.tf_env import prepare_tensorflow

            prepare_tensorflow()
            run_queue(queue, echo=lambda m: print(m, flush=True))
    except HenetEdgeError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
