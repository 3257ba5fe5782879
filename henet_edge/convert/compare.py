"""HENet r2-r4 against ShuffleNet r2-r5 on one pinned core, as in the paper's Table 3.

Each model is built (trained weights are not needed for speed), lowered
(see :mod:`.lowering`; several lowerings can be timed side by side, the first
being the reference), converted to float32 and int8 TFLite with a calibration
set, audited, and then all of them are timed together with the paper's
protocol, interleaved A B A B so the ratios hold on a noisy machine.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from henet_edge import HenetEdgeError
from henet_edge.device.bench import BenchOptions, run_bench
from henet_edge.henet_keras.registry import (
    check_model_args,
    model_names,
    model_spec,
    paper_row,
    paper_table,
    run_name,
)
from henet_edge.plots import check_plot_target, pyplot, save_figure

from .lowering import LOWERINGS

DEFAULT_MODELS = tuple(paper_table())  # every model of the paper's Table 3


class CompareError(HenetEdgeError, RuntimeError):
    """A comparison that cannot be made as asked, with the fix in its message."""


def parse_models(text: str) -> list[tuple[str, int]]:
    """``henet:2,3;shufflenet:2`` as ``[("henet", 2), ("henet", 3), ("shufflenet", 2)]``."""
    wanted = []
    try:
        for part in text.split(";"):
            family, repeats_text = part.split(":")
            wanted += [(family.strip(), int(r)) for r in repeats_text.split(",")]
    except ValueError:
        raise CompareError(f"--models {text!r}: expected FAMILY:R,R;FAMILY:R, e.g. "
                           "henet:2,3;shufflenet:3") from None
    for family, repeat in wanted:
        model_spec(family)
        check_model_args(repeat, 10, option_prefix="--models ")
    return wanted


def parse_lowerings(text: str) -> tuple[str, ...]:
    """``grouped,folded`` as a tuple of distinct, known lowering names."""
    chosen = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [name for name in chosen if name not in LOWERINGS]
    if unknown or not chosen or len(set(chosen)) != len(chosen):
        raise CompareError(f"--lowering {text!r}: give distinct names from "
                           f"{', '.join(LOWERINGS)}")
    return chosen


@dataclass(frozen=True)
class CompareRequest:
    """A comparison as asked, every part checked (see :func:`check_request`)."""

    models: list[tuple[str, int]]
    lowerings: tuple[str, ...]
    options: BenchOptions
    plot: Path | None


def check_request(models: str, lowerings: str, options: BenchOptions,
                  plot: str | Path | None) -> CompareRequest:
    """Check ``--models``, ``--lowering``, the bench settings and the plot's path.

    Cheap, and made before TensorFlow loads and the slow builds start, so a
    mistyped option fails in a moment with nothing built.
    """
    wanted, chosen = parse_models(models), parse_lowerings(lowerings)
    options.validate_here()
    target = check_plot_target(plot, "compare.png") if plot else None
    return CompareRequest(wanted, chosen, options, target)


@dataclass
class Candidate:
    family: str
    repeat: int
    lowering: str
    profile: dict
    files: dict[str, Path]

    @property
    def name(self) -> str:
        return run_name(self.family, self.repeat)


def convert_audited(model, calibration: np.ndarray, stem: Path) -> dict[str, Path]:
    """``model`` as ``{stem}_float32.tflite`` and ``{stem}_int8.tflite``, each op-audited.

    Raises :class:`CompareError` naming the file when a model fails the audit.
    """
    from .audit import audit_model
    from .tflite import to_float32, to_int8

    files = {}
    for precision in ("float32", "int8"):
        path = stem.with_name(f"{stem.name}_{precision}.tflite")
        path.write_bytes(to_float32(model) if precision == "float32"
                         else to_int8(model, calibration))
        audit = audit_model(path)
        if not audit.ok:
            raise CompareError(f"{path.name}: op audit failed: {'; '.join(audit.problems)}; "
                               "time another --lowering (grouped converts the graph as is)")
        files[precision] = path
    return files


def build_candidates(models, calibration: np.ndarray, workdir: Path,
                     log: Callable[[str], None],
                     lowerings: tuple[str, ...] = ("grouped",)) -> list[Candidate]:
    from henet_edge.henet_keras import build_model
    from henet_edge.henet_keras.profile import summarize

    from .lowering import lower

    out = []
    for family, repeat in models:
        model = build_model(family, repeat=repeat, batch_size=1)
        profile = summarize(model, conv_bias=model_spec(family).conv_bias)
        for lowering in lowerings:
            files = convert_audited(lower(model, lowering), calibration,
                                    workdir / f"{run_name(family, repeat)}_{lowering}")
            log(f"built and converted {run_name(family, repeat)} ({lowering})")
            out.append(Candidate(family, repeat, lowering, profile, files))
    return out


def calibration_inputs(spec: str | None, num: int = 200) -> np.ndarray | None:
    """Calibration images of a data source or .npz (``None``: random inputs)."""
    if not spec:
        return None
    from henet_edge.calibration.calibration_set import resolve_calibration
    from henet_edge.device.preprocess import DEFAULT

    return resolve_calibration(spec, num=num, seed=0, preprocessing=DEFAULT).inputs()


def compare(models=DEFAULT_MODELS, *, calibration: np.ndarray | None = None,
            options: BenchOptions | None = None, workdir: Path | None = None,
            lowerings: tuple[str, ...] = ("grouped",),
            log: Callable[[str], None] = print) -> dict:
    """Build, lower, convert and time every model; returns the raw figures."""
    if calibration is None:  # untrained weights: any inputs of the right range calibrate them
        calibration = np.random.default_rng(0).standard_normal((64, 31, 31, 3)).astype("float32")
    options = options or BenchOptions()
    with tempfile.TemporaryDirectory(prefix="henet-compare-") as tmp:
        workdir = Path(workdir or tmp)
        candidates = build_candidates(models, calibration, workdir, log, lowerings)
        specs = [c.files[p] for c in candidates for p in ("float32", "int8")]
        log(f"timing {len(specs)} models interleaved: {options.repeats} x {options.runs} "
            "passes each on one core")
        run = run_bench(specs, options, progress=None)
        rows_by_path = {row["path"]: row for row in run.result["models"]}
        rows = []
        for c in candidates:
            entry = {"model": c.name, "family": c.family, "repeat": c.repeat,
                     "lowering": c.lowering,
                     "params": c.profile["params"], "macs": c.profile["macs"],
                     "paper_params": c.profile["paper_params"],
                     "paper_macs": c.profile["paper_macs"],
                     "paper": paper_row(c.family, c.repeat)}
            for precision, path in c.files.items():
                r = rows_by_path[str(path)]
                entry[precision] = {"size_bytes": path.stat().st_size, "time_s": r["time_s"],
                                    "median_ms": r["per_inference_ms"]["median"],
                                    "p90_ms": r["per_inference_ms"]["p90"],
                                    "delegate_nodes": r["delegate_nodes"]}
            rows.append(entry)
    return {"rows": rows, "lowerings": list(lowerings), "ratios": _ratios(rows),
            "lowering_speedups": _lowering_speedups(rows, lowerings[0]), "bench": {
        k: run.result[k] for k in ("protocol", "paper_protocol", "runs", "repeats", "core",
                                   "environment", "warnings") if k in run.result}}


def _ratios(rows: list[dict]) -> list[dict]:
    """HENet / ShuffleNet latency at equal repeat, and int8 speed-up over float32."""
    by = {(r["family"], r["repeat"], r["lowering"]): r for r in rows}
    out = []
    for (family, repeat, lowering), row in by.items():
        item = {"model": row["model"], "lowering": lowering,
                "int8_speedup": row["float32"]["median_ms"] / row["int8"]["median_ms"]}
        other = by.get(("shufflenet", repeat, lowering))
        if family == "henet" and other:
            for p in ("float32", "int8"):
                item[f"henet_over_shufflenet_{p}"] = (row[p]["median_ms"]
                                                      / other[p]["median_ms"])
            paper = paper_row("henet", repeat), paper_row("shufflenet", repeat)
            if all(paper):
                item["paper_henet_over_shufflenet"] = paper[0]["time_s"] / paper[1]["time_s"]
        out.append(item)
    return out


def _lowering_speedups(rows: list[dict], reference: str) -> list[dict]:
    """Each lowering's speed-up over the reference lowering, per model and precision."""
    ref = {(r["family"], r["repeat"]): r for r in rows if r["lowering"] == reference}
    out = []
    for r in rows:
        base = ref.get((r["family"], r["repeat"]))
        if base is None or r["lowering"] == reference:
            continue
        out.append({"model": r["model"], "lowering": r["lowering"], "reference": reference,
                    **{p: base[p]["median_ms"] / r[p]["median_ms"]
                       for p in ("float32", "int8")}})
    return out


def format_machine(result: dict) -> str:
    """The protocol, core and CPU the figures were measured with."""
    bench = result["bench"]
    env = bench["environment"]
    return (f"{bench['protocol']} protocol, core {bench['core']}, "
            f"{env.get('cpu', 'unknown CPU')} ({env.get('machine', '?')}, "
            f"board: {env.get('board', 'unknown')})")


def format_table(result: dict) -> str:
    lines = [
        f"{'model':<14}{'lowering':<11}{'params':>9}{'MACs':>8}{'paper #param':>13}"
        f"{'paper MFLOPs':>13}"
        f"{'fp32 KB':>9}{'int8 KB':>9}{'fp32 ms':>9}{'p90':>7}{'int8 ms':>9}{'p90':>7}"
        f"{'paper time(s)':>14}{'paper acc':>10}",
    ]
    for r in result["rows"]:
        p = r["paper"] or {}
        lines.append(
            f"{r['model']:<14}{r['lowering']:<11}{r['params']:>9,}{r['macs'] / 1e6:>7.2f}M"
            f"{r['paper_params'] / 1e3:>12.1f}K{r['paper_macs'] / 1e6:>13.2f}"
            f"{r['float32']['size_bytes'] / 1024:>9.0f}{r['int8']['size_bytes'] / 1024:>9.0f}"
            f"{r['float32']['median_ms']:>9.3f}{r['float32']['p90_ms']:>7.3f}"
            f"{r['int8']['median_ms']:>9.3f}{r['int8']['p90_ms']:>7.3f}"
            f"{p.get('time_s', float('nan')):>14.3f}{p.get('accuracy', float('nan')):>9.2f}%")
    lines.append("")
    lines.append("ratios (median latency):")
    for item in result["ratios"]:
        text = (f"  {item['model']:<14}{item['lowering']:<11} int8 speed-up over float32 "
                f"{item['int8_speedup']:.2f}x")
        if "henet_over_shufflenet_float32" in item:
            text += (f"; HENet/ShuffleNet at equal repeat: float32 "
                     f"{item['henet_over_shufflenet_float32']:.2f}, int8 "
                     f"{item['henet_over_shufflenet_int8']:.2f}")
            if "paper_henet_over_shufflenet" in item:
                text += f" (paper {item['paper_henet_over_shufflenet']:.2f})"
        lines.append(text)
    if result.get("lowering_speedups"):
        lines.append("")
        lines.append("lowering speed-ups (median latency, same run):")
        for item in result["lowering_speedups"]:
            lines.append(f"  {item['model']:<14}{item['lowering']:<11} over "
                         f"{item['reference']}: float32 {item['float32']:.2f}x, "
                         f"int8 {item['int8']:.2f}x")
    return "\n".join(lines)


# Marker and line of each lowering in the plot, cycled: every lowering timed is drawn.
LINE_STYLES = (("o", "-"), ("s", "--"), ("^", ":"), ("D", "-."))


def plot(result: dict, path: Path) -> None:
    """Latency against MACs: one panel per precision, a line per family and lowering."""
    plt = pyplot()
    lowerings = result.get("lowerings") or ["grouped"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for ax, precision in zip(axes, ("float32", "int8"), strict=True):
        for i, family in enumerate(model_names()):
            color = f"C{i}"
            for lowering, (marker, line) in zip(lowerings, itertools.cycle(LINE_STYLES)):
                rows = sorted((r for r in result["rows"] if r["family"] == family
                               and r.get("lowering", "grouped") == lowering),
                              key=lambda r: r["repeat"])
                if not rows:
                    continue
                xs = [r["macs"] / 1e6 for r in rows]
                ys = [r[precision]["median_ms"] for r in rows]
                ax.plot(xs, ys, color=color, marker=marker, linestyle=line,
                        label=f"{family} ({lowering})")
                for r, x, y in zip(rows, xs, ys, strict=True):
                    ax.annotate(f"r{r['repeat']}", (x, y), textcoords="offset points",
                                xytext=(4, 4), fontsize=7)
        ax.set_title(f"{precision} TFLite + XNNPACK, one core")
        ax.set_xlabel("real MACs (M)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("median latency per inference (ms)")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
