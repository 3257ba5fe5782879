"""Score the equal-budget campaign: accuracy against latency, HENet against ShuffleNet.

For every finished run of a :class:`~henet_edge.henet_keras.campaign.Campaign`:
convert it to float32 and int8 with one calibration set (drawn from the campaign's
training split, so no validation image calibrates), score both on the run's
validation split (the convert report card), then time all bundles together with the
paper's protocol, interleaved on one pinned core. The answer is a table, one PNG
per precision with each family's Pareto front, and plain statements of dominance.
Each lowering (:mod:`.lowering`) is a report of its own: the default one's bundles are
``bundles/<run>``, another's ``bundles-<lowering>/<run>``, and so on for the files.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from henet_edge.device.bench import BenchOptions, run_bench
from henet_edge.device.manifest import (
    CALIBRATION_FILE,
    MANIFEST,
    REPORT_JSON,
    model_file,
)
from henet_edge.henet_keras.campaign import Campaign, run_state
from henet_edge.henet_keras.registry import model_names, paper_row, run_name
from henet_edge.henet_keras.run import Run, training_hours
from henet_edge.plots import pyplot, save_figure

from .lowering import DEFAULT_LOWERING

PRECISIONS = ("float32", "int8")


def suffix(lowering: str) -> str:
    """What a lowering's bundle folder and report files add to the default's names."""
    return "" if lowering == DEFAULT_LOWERING else f"-{lowering}"


def campaign_calibration(campaign: Campaign, path: Path, num: int = 500):
    """The campaign's one calibration set: a stratified sample of its training split."""
    from henet_edge.calibration.calibration_set import load_calibration, sample
    from henet_edge.device.preprocess import Preprocessing
    from henet_edge.henet_keras.run import load_training_data

    if path.is_file():
        return load_calibration(path)
    family, repeat = campaign.models[0]
    config = campaign.config(family, repeat)
    _, train, _ = load_training_data(config)
    calib = sample(train.images, train.labels, train.class_names, train.ids, num=num,
                   seed=campaign.seed, spec=Preprocessing.from_dict(config.preprocessing),
                   source=f"{campaign.data} (training split of seed {campaign.seed})")
    calib.save(path)
    return calib


def score_runs(campaign: Campaign, out: Path, *, calibration_images: int = 500,
               lowering: str = DEFAULT_LOWERING,
               log: Callable[[str], None] = print) -> list[str]:
    """Convert every finished, not yet converted run to ``out/bundles[-LOWERING]/<run>``."""
    from .pipeline import ConvertOptions, convert

    calib_path = out / CALIBRATION_FILE
    campaign_calibration(campaign, calib_path, calibration_images)
    done = []
    for family, repeat in campaign.models:
        run_dir = campaign.run_dir(family, repeat)
        bundle = out / f"bundles{suffix(lowering)}" / run_dir.name
        if run_state(run_dir) != "finished" or (bundle / MANIFEST).is_file():
            continue
        log(f"{run_dir.name}: converting ({lowering}) and scoring on its validation split")
        convert(run_dir, str(calib_path), bundle,
                ConvertOptions(gate=False, lowering=lowering), log=log)
        done.append(run_dir.name)
    return done


def _row(campaign: Campaign, family: str, repeat: int, bundle: Path) -> dict:
    from henet_edge.device.preprocess import Preprocessing
    from henet_edge.henet_keras.profile import profile_family

    run = Run.load(campaign.run_dir(family, repeat))
    history = run.history
    report = json.loads((bundle / REPORT_JSON).read_text())
    config = run.train_config  # the model as trained: its classes, input size and width
    profile = profile_family(family, repeat=repeat, classes=len(run.config["labels"]),
                             input_size=Preprocessing.from_dict(config.preprocessing).input_size,
                             width_multiplier=config.width_multiplier)
    return {
        "model": run_name(family, repeat), "family": family, "repeat": repeat,
        "params": profile["params"], "macs": profile["macs"],
        "accuracy": {"keras": report["keras"]["top1"], "float32": report["float32"]["top1"],
                     "int8": report["int8"]["top1"],
                     "mean_last5_keras": run.mean_last5()},
        "validation_images": report["images"],
        "train_images_per_s": float(np.mean([h["images_per_s"] for h in history])),
        "train_hours": training_hours(history),
        "epochs": len(history),
        "paper": paper_row(family, repeat),
        "files": {p: str(bundle / model_file(p)) for p in PRECISIONS},
    }


def build_report(campaign: Campaign, out: Path, options: BenchOptions,
                 *, lowering: str = DEFAULT_LOWERING,
                 log: Callable[[str], None] = print) -> dict:
    """Time every scored bundle together and assemble the side-by-side answer."""
    rows, missing = [], []
    for family, repeat in campaign.models:
        bundle = out / f"bundles{suffix(lowering)}" / run_name(family, repeat)
        if (bundle / REPORT_JSON).is_file():
            rows.append(_row(campaign, family, repeat, bundle))
        else:
            missing.append(run_name(family, repeat))
    if not rows:
        raise RuntimeError("no scored run yet: train and score at least one model first")
    rows.sort(key=lambda r: (r["family"], r["repeat"]))  # not the queue's priority order
    specs = [r["files"][p] for r in rows for p in PRECISIONS]
    log(f"timing {len(specs)} models interleaved: {options.repeats} x {options.runs} passes "
        "each on one core")
    bench = run_bench(specs, options, progress=None).result
    by_path = {m["path"]: m for m in bench["models"]}
    for r in rows:
        r["latency_ms"] = {p: by_path[r["files"][p]]["per_inference_ms"]["median"]
                           for p in PRECISIONS}
        r["latency_p90_ms"] = {p: by_path[r["files"][p]]["per_inference_ms"]["p90"]
                               for p in PRECISIONS}
    return {"lowering": lowering, "rows": rows, "left_out": missing,
            "answer": {p: dominance(rows, p) for p in PRECISIONS},
            "bench": {k: bench[k] for k in ("protocol", "runs", "repeats", "core",
                                            "environment", "warnings") if k in bench}}


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (latency, accuracy) points no other point beats on both (faster and as good)."""
    front, best = [], -np.inf
    for lat, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if acc > best:
            front.append((lat, acc))
            best = acc
    return front


def dominance(rows: list[dict], precision: str) -> dict:
    """HENet against ShuffleNet at equal repeat and at equal accuracy, in one precision."""
    def acc(r):
        return r["accuracy"][precision]

    def lat(r):
        return r["latency_ms"][precision]

    henet = [r for r in rows if r["family"] == "henet"]
    shuffle = [r for r in rows if r["family"] == "shufflenet"]
    equal_repeat = []
    for h in henet:
        for s in shuffle:
            if s["repeat"] == h["repeat"]:
                equal_repeat.append({
                    "repeat": h["repeat"], "henet_more_accurate": acc(h) >= acc(s),
                    "henet_faster": lat(h) <= lat(s), "accuracy_points": 100 * (acc(h) - acc(s)),
                    "latency_ratio": lat(h) / lat(s)})
    equal_accuracy = []
    for s in shuffle:  # the fastest HENet at least as accurate as this ShuffleNet
        rivals = [h for h in henet if acc(h) >= acc(s)]
        best = min(rivals, key=lat, default=None)
        equal_accuracy.append({
            "shufflenet": s["model"], "henet": best["model"] if best else None,
            "latency_ratio": lat(best) / lat(s) if best else None,
            "henet_faster": bool(best) and lat(best) <= lat(s)})
    return {"equal_repeat": equal_repeat, "equal_accuracy": equal_accuracy,
            "henet_dominates": bool(equal_repeat + equal_accuracy) and all(
                e["henet_more_accurate"] and e["henet_faster"] for e in equal_repeat)
            and all(e["henet_faster"] for e in equal_accuracy)}


def format_report(report: dict) -> str:
    env = report["bench"]["environment"]
    lines = [f"cpu: {env.get('cpu')}; protocol {report['bench']['protocol']}: "
             f"{report['bench']['runs']} passes x {report['bench']['repeats']} on core "
             f"{report['bench']['core']}, all models interleaved; lowering "
             f"{report.get('lowering', DEFAULT_LOWERING)}", "",
             "| model | params | MACs | float32 acc | int8 acc | mean last 5 (Keras) | "
             "float32 ms | int8 ms | train img/s | train h | paper acc |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        a, t, paper = r["accuracy"], r["latency_ms"], r["paper"] or {}
        lines.append(
            f"| {r['model']} | {r['params']:,} | {r['macs'] / 1e6:.2f} M | "
            f"{100 * a['float32']:.2f} % | {100 * a['int8']:.2f} % | "
            f"{100 * a['mean_last5_keras']:.2f} % | {t['float32']:.3f} | {t['int8']:.3f} | "
            f"{r['train_images_per_s']:.0f} | {r['train_hours']:.2f} | "
            f"{paper.get('accuracy', float('nan')):.2f} % |")
    if report["left_out"]:
        lines += ["", "not yet trained and scored: " + ", ".join(report["left_out"])]
    for precision, answer in report["answer"].items():
        lines += ["", f"{precision}: HENet dominates ShuffleNet: "
                  f"{'yes' if answer['henet_dominates'] else 'no'}"]
        for e in answer["equal_repeat"]:
            lines.append(f"  repeat {e['repeat']}: HENet {e['accuracy_points']:+.2f} pt, "
                         f"latency x{e['latency_ratio']:.2f}")
        for e in answer["equal_accuracy"]:
            lines.append(f"  as accurate as {e['shufflenet']}: "
                         + (f"{e['henet']} at x{e['latency_ratio']:.2f} the latency"
                            if e["henet"] else "no HENet model is"))
    return "\n".join(lines)


def plot_accuracy_latency(report: dict, out: Path) -> list[Path]:
    """One PNG per precision: accuracy against latency, each family's Pareto front."""
    plt = pyplot()
    lowering = report.get("lowering", DEFAULT_LOWERING)
    written = []
    for precision in PRECISIONS:
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        for i, family in enumerate(model_names()):
            color = f"C{i}"
            rows = [r for r in report["rows"] if r["family"] == family]
            if not rows:
                continue
            pts = [(r["latency_ms"][precision], 100 * r["accuracy"][precision]) for r in rows]
            ax.scatter(*zip(*pts, strict=True), color=color, label=family, zorder=3)
            for r, (x, y) in zip(rows, pts, strict=True):
                ax.annotate(f"r{r['repeat']}", (x, y), textcoords="offset points",
                            xytext=(4, 4), fontsize=8)
            front = pareto_front(pts)
            ax.step(*zip(*front, strict=True), where="post", color=color, alpha=0.6,
                    label=f"{family} Pareto front")
        ax.set_xlabel(f"median latency per inference, {precision} (ms, one core)")
        ax.set_ylabel(f"top-1 on the validation split, {precision} (%)")
        ax.set_title(f"Equal-budget training: accuracy against latency ({precision}, "
                     f"{lowering})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / f"accuracy-latency-{precision}{suffix(lowering)}.png"
        written.append(save_figure(fig, path, dpi=120))
    return written
