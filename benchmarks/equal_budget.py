"""The equal-budget campaign: HENet r2-r4 and ShuffleNet r2-r5, one recipe, one split.

    python benchmarks/equal_budget.py train   # run (or continue) the queue
    python benchmarks/equal_budget.py status  # what is finished, in progress, to do
    python benchmarks/equal_budget.py report  # convert + score finished runs, time them
                                              # together, write results.{json,md} + PNGs
    python benchmarks/equal_budget.py report --lowering dense  # the same, another lowering

Each model is an ordinary run folder under ``training/equal-budget/<family>-r<N>/``.
Killed at any point, the same command continues where it stopped (at most one epoch
lost); a run folder made with other settings is refused, naming the difference.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from henet_edge import HenetEdgeError  # noqa: E402
from henet_edge.convert.lowering import DEFAULT_LOWERING, LOWERINGS  # noqa: E402
from henet_edge.henet_keras.campaign import (  # noqa: E402
    CAMPAIGN_MODELS,
    Campaign,
    check_campaign,
    run_campaign,
)
from henet_edge.storage import write_text_atomic  # noqa: E402


def parse_models(text: str | None) -> tuple[tuple[str, int], ...]:
    if not text:
        return CAMPAIGN_MODELS
    models = []
    for name in text.split(","):
        family, _, repeat = name.strip().partition("-r")
        if not repeat.isdigit() or (family, int(repeat)) not in CAMPAIGN_MODELS:
            raise SystemExit(f"unknown model {name!r}; choose from "
                             + ", ".join(f"{f}-r{r}" for f, r in CAMPAIGN_MODELS))
        models.append((family, int(repeat)))
    return tuple(models)


def report(campaign: Campaign, args) -> None:
    from henet_edge.convert.campaign_report import (
        build_report,
        format_report,
        plot_accuracy_latency,
        score_runs,
        suffix,
    )
    from henet_edge.device.bench import BenchOptions
    from henet_edge.henet_keras.tf_env import prepare_tensorflow

    prepare_tensorflow()

    def echo(message: str) -> None:
        print(message, flush=True)

    score_runs(campaign, args.root, lowering=args.lowering, log=echo)
    options = BenchOptions(runs=args.runs, repeats=args.repeats, core=args.core,
                           precision="all")
    result = build_report(campaign, args.root, options, lowering=args.lowering, log=echo)
    name = f"results{suffix(args.lowering)}"
    write_text_atomic(args.root / f"{name}.json", json.dumps(result, indent=1))
    text = format_report(result)
    write_text_atomic(args.root / f"{name}.md", text + "\n")
    pngs = plot_accuracy_latency(result, args.root)
    print(text)
    print("wrote", ", ".join(str(p) for p in [args.root / f"{name}.json",
                                               args.root / f"{name}.md", *pngs]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="train: run or continue the queue; status: what is finished, in progress, "
               "to do; report: convert and score the finished runs, time them together, "
               "write results.{json,md} and the accuracy-latency PNGs.")
    parser.add_argument("action", choices=["train", "status", "report"])
    parser.add_argument("--root", type=Path, default=Path("training/equal-budget"),
                        help="folder of the run folders [%(default)s]")
    parser.add_argument("--data", default="../shared/data/cifar10-train-jpeg.tar.gz",
                        help="training images, as for `henet-edge train --data` "
                             "[%(default)s]")
    parser.add_argument("--recipe", default="fast", help="training recipe [%(default)s]")
    parser.add_argument("--epochs", type=int, default=30,
                        help="epochs of every model [%(default)s]")
    parser.add_argument("--seed", type=int, default=0, help="seed of every run [%(default)s]")
    parser.add_argument("--val-split", type=float, default=0.1,
                        help="held-out fraction, the same split for all [%(default)s]")
    parser.add_argument("--limit", type=int, default=None,
                        help="use only N training images (a quick check)")
    parser.add_argument("--models", default=None,
                        help="comma list, e.g. henet-r2,henet-r3 [all seven]")
    parser.add_argument("--runs", type=int, default=1000,
                        help="report: timed passes per repeat [%(default)s]")
    parser.add_argument("--repeats", type=int, default=5,
                        help="report: repeats of the passes [%(default)s]")
    parser.add_argument("--core", type=int, default=None,
                        help="report: the core to time on [the last]")
    parser.add_argument("--lowering", choices=LOWERINGS, default=DEFAULT_LOWERING,
                        help="report: how the bundles lower grouped convs and shuffles "
                             "(`henet-edge compare --help`); another than the default "
                             "writes bundles-LOWERING/ and results-LOWERING.* [%(default)s]")
    args = parser.parse_args()
    campaign = Campaign(root=args.root, data=args.data, recipe=args.recipe,
                        epochs=args.epochs, seed=args.seed, val_split=args.val_split,
                        limit=args.limit, models=parse_models(args.models))
    try:
        if args.action == "status":
            print(json.dumps(check_campaign(campaign), indent=1))
        elif args.action == "report":
            report(campaign, args)
        else:
            from henet_edge.henet_keras.tf_env import prepare_tensorflow

            prepare_tensorflow()
            run_campaign(campaign, echo=lambda m: print(m, flush=True))
    except HenetEdgeError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
