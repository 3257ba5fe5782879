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

import json
import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from henet_edge import HenetEdgeError, UsageError  # noqa: E402
from henet_edge.cli.base import script_help, user_errors  # noqa: E402
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
            raise UsageError(f"unknown model {name!r}; choose from "
                             + ", ".join(f"{f}-r{r}" for f, r in CAMPAIGN_MODELS))
        models.append((family, int(repeat)))
    return tuple(models)


def report(campaign: Campaign, root: Path, lowering: str, options) -> None:
    """Convert and score the finished runs, time them together, write the answer."""
    from henet_edge.convert.campaign_report import (
        build_report,
        format_report,
        plot_accuracy_latency,
        score_runs,
        suffix,
    )
    from henet_edge.henet_keras.tf_env import prepare_tensorflow

    prepare_tensorflow()

    def echo(message: str) -> None:
        print(message, flush=True)

    score_runs(campaign, root, lowering=lowering, log=echo)
    result = build_report(campaign, root, options, lowering=lowering, log=echo)
    name = f"results{suffix(lowering)}"
    write_text_atomic(root / f"{name}.json", json.dumps(result, indent=1))
    text = format_report(result)
    write_text_atomic(root / f"{name}.md", text + "\n")
    pngs = plot_accuracy_latency(result, root)
    print(text)
    print("wrote", ", ".join(str(p) for p in [root / f"{name}.json", root / f"{name}.md",
                                               *pngs]))


@click.command(help=script_help(__doc__), epilog=(
    "train: run or continue the queue; status: what is finished, in progress, to do; "
    "report: convert and score the finished runs, time them together, write "
    "results.{json,md} and the accuracy-latency PNGs."))
@click.argument("action", type=click.Choice(["train", "status", "report"]))
@click.option("--root", type=click.Path(file_okay=False, path_type=Path),
              default=Path("training/equal-budget"), show_default=True,
              help="Folder of the run folders.")
@click.option("--data", default="../shared/data/cifar10-train-jpeg.tar.gz",
              show_default=True, help="Training images, as for `henet-edge train --data`.")
@click.option("--recipe", default="fast", show_default=True, help="Training recipe.")
@click.option("--epochs", type=click.IntRange(1), default=30, show_default=True,
              help="Epochs of every model.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every run.")
@click.option("--val-split", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=0.1, show_default=True,
              help="Held-out fraction, the same split for all.")
@click.option("--limit", type=click.IntRange(1), default=None,
              help="Use only N training images (a quick check).")
@click.option("--models", default=None,
              help="Comma list, e.g. henet-r2,henet-r3 [all seven].")
@click.option("--runs", type=click.IntRange(1), default=1000, show_default=True,
              help="report: timed passes per repeat.")
@click.option("--repeats", type=click.IntRange(1), default=5, show_default=True,
              help="report: repeats of the passes.")
@click.option("--core", type=click.IntRange(0), default=None,
              help="report: the core to time on [the last].")
@click.option("--lowering", type=click.Choice(LOWERINGS), default=DEFAULT_LOWERING,
              show_default=True,
              help="report: how the bundles lower grouped convs and shuffles (`henet-edge "
                   "compare --help`); another than the default writes bundles-LOWERING/ and "
                   "results-LOWERING.*.")
@user_errors
def main(action: str, root: Path, data: str, recipe: str, epochs: int, seed: int,
         val_split: float, limit: int | None, models: str | None, runs: int, repeats: int,
         core: int | None, lowering: str) -> None:
    campaign = Campaign(root=root, data=data, recipe=recipe, epochs=epochs, seed=seed,
                        val_split=val_split, limit=limit, models=parse_models(models))
    if action == "status":
        print(json.dumps(check_campaign(campaign), indent=1))
    elif action == "report":
        from henet_edge.device.bench import BenchOptions

        options = BenchOptions(runs=runs, repeats=repeats, core=core, precision="all")
        try:  # a core this process may not use: refused before converting anything
            options.validate_here()
        except HenetEdgeError as exc:
            raise UsageError(str(exc)) from None
        report(campaign, root, lowering, options)
    else:
        from henet_edge.henet_keras.tf_env import prepare_tensorflow

        prepare_tensorflow()
        run_campaign(campaign, echo=lambda m: print(m, flush=True))


if __name__ == "__main__":
    main()
