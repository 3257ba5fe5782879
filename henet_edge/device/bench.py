"""The timing protocol: ``henet-edge bench``.

The paper's protocol: one random test image, 1000 forward passes on one CPU
core, repeated 5 times; its "Time (s)" is the mean over the repeats of the
time of the 1000 passes. Here the process is pinned to one core with
``os.sched_setaffinity`` and the interpreter runs one thread; warm-up passes
come first and are not counted. A forward pass is one ``invoke()`` on an
input set once before (as the paper times a network's forward pass).

Several models run interleaved (A B A B, one block of passes each per
repeat) so that their ratios hold on a noisy machine. ``xnnpack_check`` adds
each model once more without the XNNPACK delegate.
"""

from __future__ import annotations

import gc
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from henet_edge import HenetEdgeError
from henet_edge.plots import check_plot_target, png_path, pyplot, save_figure
from henet_edge.storage import check_output_file, write_text_atomic

from .bundle import PRECISIONS, is_bundle, load_bundle, sha256_file
from .environment import UNKNOWN, Probe, assess, describe_int8_features
from .preprocess import DEFAULT, Preprocessing, normalize, open_image, preprocess_image
from .runtime import (
    MAX_THREADS,
    RuntimeInfo,
    RuntimeMissing,
    TFLiteModel,
    find_runtime,
    open_model,
)

MAX_RUNS = 1_000_000
MAX_REPEATS = 1000
MAX_PASSES = 10_000_000
PROTOCOLS = {"paper": {"runs": 1000, "repeats": 5, "warmup": 50}}


class BenchError(HenetEdgeError, ValueError):
    """Bad benchmark options (unknown core, bad counts, unusable model)."""


# ------------------------------------------------------------------ core pinning
def check_core(core: int) -> int:
    """``core`` if this process may run on it, else a :class:`BenchError`."""
    if not hasattr(os, "sched_setaffinity"):
        raise BenchError("pinning to one core needs Linux (os.sched_setaffinity)")
    allowed = sorted(os.sched_getaffinity(0))
    count = os.cpu_count() or len(allowed)
    if core < 0 or core >= count:
        raise BenchError(f"--core {core}: no such core; this machine has cores 0..{count - 1}")
    if core not in allowed:
        raise BenchError(f"--core {core} is not available to this process "
                         f"(allowed: {', '.join(map(str, allowed))})")
    return core


def default_core() -> int:
    """The highest-numbered core this process may use (core 0 takes most interrupts)."""
    if not hasattr(os, "sched_getaffinity"):
        raise BenchError("pinning to one core needs Linux (os.sched_setaffinity)")
    return max(os.sched_getaffinity(0))


def bench_cores(core: int, threads: int) -> list[int]:
    """One core per interpreter thread: ``core``, then the highest-numbered others allowed
    (threads made while pinned inherit the pinning, so N threads on one core would share it)."""
    allowed = sorted(os.sched_getaffinity(0), reverse=True)
    if threads > len(allowed):
        raise BenchError(f"--threads {threads} needs {threads} cores; this process may use "
                         f"{len(allowed)}")
    return [core, *[c for c in allowed if c != core][:threads - 1]]


@contextmanager
def pinned(cores: Sequence[int]) -> Iterator[None]:
    """Run the calling thread (and threads it starts) on ``cores`` only, restoring the old
    affinity after."""
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(cores))
    try:
        yield
    finally:
        os.sched_setaffinity(0, old)


# ------------------------------------------------------------------ models
@dataclass
class BenchModel:
    """One model to time, with its input already set."""

    name: str
    path: Path
    model: TFLiteModel
    first_ms: float = 0.0
    totals_s: list[float] = field(default_factory=list)
    latencies_ns: list[int] = field(default_factory=list)


def resolve_models(specs: Sequence[str | Path],
                   precision: str) -> list[tuple[str, Path, Preprocessing]]:
    """``(name, tflite path, preprocessing)`` for each bundle or ``.tflite`` given.

    A bundle contributes its ``precision`` model, or every model with ``all``.
    Bundles are verified against their manifest hashes first.
    """
    resolved: list[tuple[str, str, Path, Preprocessing]] = []  # name, fuller name, ...
    for spec in specs:
        path = Path(spec).expanduser()
        if is_bundle(path):
            bundle = load_bundle(path)
            wanted = bundle.precisions if precision == "all" else [precision]
            name = bundle.manifest.name or bundle.root.name
            for p in wanted:
                resolved.append((f"{name}/{p}", f"{bundle.root.name}/{p}",
                                 bundle.model_path(p), bundle.preprocessing))
        elif path.is_file():
            resolved.append((path.stem, f"{path.parent.name}/{path.stem}", path, DEFAULT))
        else:
            raise BenchError(f"{path}: no such model (a bundle folder or a .tflite file)")
    names = [n for n, _, _, _ in resolved]
    fuller = [f for _, f, _, _ in resolved]
    # Two models of one name (the same model from two bundles, say) go by their
    # folders' names where those tell them apart, else by their place on the line.
    return [(n if names.count(n) == 1 else f if fuller.count(f) == 1 else f"{n}#{i + 1}", p, s)
            for i, (n, f, p, s) in enumerate(resolved)]


def make_input(model: TFLiteModel, spec: Preprocessing, image: Path | None,
               seed: int) -> tuple[np.ndarray, str]:
    """The one input every pass uses: ``image`` preprocessed, or random pixels."""
    shape = model.input_shape
    if len(shape) != 4 or shape[0] != 1:
        raise BenchError(f"{model.path}: expected an NHWC input with batch 1, got {list(shape)}")
    _, h, w, c = shape
    if image is not None:
        if (h, w, c) != (spec.input_size, spec.input_size, 3):
            raise BenchError(f"{model.path}: input {list(shape)} does not match the "
                             f"preprocessing ({spec.input_size}x{spec.input_size}x3)")
        try:
            x = preprocess_image(open_image(str(image)), spec)
        except (OSError, ValueError) as exc:
            raise BenchError(f"{image}: {exc}") from None
        return model.quantize_input(x), f"image {image}"
    pixels = np.random.default_rng(seed).integers(0, 256, size=(h, w, c), dtype=np.uint8)
    x = normalize(pixels, spec) if c == 3 else pixels / np.float32(255.0)
    return model.quantize_input(x), f"random pixels (seed {seed})"


def _time_block(invoke: Callable[[], None], runs: int) -> tuple[float, list[int]]:
    """Total seconds of ``runs`` invokes and each one's nanoseconds."""
    clock = time.perf_counter_ns
    times = [0] * runs
    start = clock()
    for i in range(runs):
        t0 = clock()
        invoke()
        times[i] = clock() - t0
    return (clock() - start) / 1e9, times


NOISY_P90_OVER_MEDIAN = 2.0  # a p90 above twice the median: the core was shared
NOISY_CV = 0.5  # or a standard deviation above half the mean


def noise_reasons(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Why the spread of a model's latencies says the core was not quiet, one per model."""
    reasons = []
    for row in rows:
        s = row["per_inference_ms"]
        if s["median"] > 0 and s["p90"] > NOISY_P90_OVER_MEDIAN * s["median"]:
            why = (f"p90 {s['p90']:.3f} ms is {s['p90'] / s['median']:.1f}x the median "
                   f"{s['median']:.3f} ms")
        elif s["mean"] > 0 and s["std"] > NOISY_CV * s["mean"]:
            why = (f"standard deviation {s['std']:.3f} ms is {s['std'] / s['mean']:.0%} of "
                   f"the mean {s['mean']:.3f} ms")
        else:
            continue
        reasons.append(f"noisy timing of {row['name']}: {why}; another process probably "
                       "used the core (re-run on a quiet machine, or pick another --core)")
    return reasons


def latency_stats(latencies_ns: Sequence[int]) -> dict[str, float]:
    """Per-inference mean, median, p90, p99, std, min and max, in ms."""
    ms = np.asarray(latencies_ns, dtype=np.float64) / 1e6
    return {"mean": float(ms.mean()), "median": float(np.median(ms)),
            "p90": float(np.percentile(ms, 90)), "p99": float(np.percentile(ms, 99)),
            "std": float(ms.std()), "min": float(ms.min()), "max": float(ms.max())}


# ------------------------------------------------------------------ the protocol
@dataclass
class BenchOptions:
    runs: int = PROTOCOLS["paper"]["runs"]
    repeats: int = PROTOCOLS["paper"]["repeats"]
    warmup: int = PROTOCOLS["paper"]["warmup"]
    core: int | None = None
    threads: int = 1
    precision: str = "int8"
    image: Path | None = None
    seed: int = 0
    xnnpack_check: bool = False
    protocol: str = "paper"

    @classmethod
    def for_protocol(cls, protocol: str = "paper", *, runs: int | None = None,
                     repeats: int | None = None, warmup: int | None = None,
                     **others: Any) -> BenchOptions:
        """The options of ``protocol``, with any of its counts given here instead."""
        if protocol not in PROTOCOLS:
            raise BenchError(f"unknown protocol {protocol!r} (known: {', '.join(PROTOCOLS)})")
        counts = PROTOCOLS[protocol]
        return cls(runs=counts["runs"] if runs is None else runs,
                   repeats=counts["repeats"] if repeats is None else repeats,
                   warmup=counts["warmup"] if warmup is None else warmup,
                   protocol=protocol, **others)

    def validate(self) -> None:
        if self.runs < 1 or self.repeats < 1:
            raise BenchError("--runs and --repeats must be at least 1")
        if (self.runs > MAX_RUNS or self.repeats > MAX_REPEATS
                or self.runs * self.repeats > MAX_PASSES):
            raise BenchError(f"--runs is at most {MAX_RUNS:,}, --repeats at most "
                             f"{MAX_REPEATS:,} and their product at most {MAX_PASSES:,} "
                             f"(every pass's time is kept), got {self.runs:,} x "
                             f"{self.repeats:,}")
        if not 0 <= self.warmup <= MAX_RUNS:
            raise BenchError(f"--warmup must be 0 to {MAX_RUNS:,}")
        if not 1 <= self.threads <= MAX_THREADS:
            raise BenchError(f"--threads must be 1 to {MAX_THREADS}, got {self.threads}")
        if self.precision not in (*PRECISIONS, "all"):
            raise BenchError(f"unknown precision {self.precision!r}")

    def validate_here(self) -> None:
        """:meth:`validate`, and ``core`` (when given) is one this process may run on.

        For timing on this machine, before any slow work (a remote bench's core is
        the device's, so it only gets :meth:`validate`).
        """
        self.validate()
        if self.core is not None:
            check_core(self.core)


@dataclass
class BenchRun:
    """A finished benchmark: the JSON-able ``result`` and every pass's latency."""

    result: dict[str, Any]
    latencies_ns: dict[str, list[int]]


def run_bench(specs: Sequence[str | Path], options: BenchOptions, *,
              probe: Probe | None = None, runtime: RuntimeInfo | None = None,
              progress: Callable[[str], None] | None = None) -> BenchRun:
    """Time every model in ``specs`` under ``options``."""
    options.validate()
    if not specs:
        raise BenchError("no model to time")
    core = check_core(options.core if options.core is not None else default_core())
    cores = bench_cores(core, options.threads)
    probe = probe or Probe()
    runtime = runtime or find_runtime()
    say = progress or (lambda _msg: None)

    models: list[BenchModel] = []
    inputs: list[str] = []
    with pinned(cores):
        for name, path, spec in resolve_models(specs, options.precision):
            variants = [(name, True)]
            if options.xnnpack_check:
                variants.append((f"{name} (no XNNPACK)", False))
            for label, xnnpack in variants:
                try:
                    model = open_model(path, num_threads=options.threads, xnnpack=xnnpack,
                                       runtime=runtime)
                except RuntimeMissing as exc:
                    raise BenchError(f"--xnnpack-check: {exc}") from None
                raw, source = make_input(model, spec, options.image, options.seed)
                model.set_input(raw)
                bench = BenchModel(label, path, model)
                t0 = time.perf_counter_ns()
                model.invoke()
                bench.first_ms = (time.perf_counter_ns() - t0) / 1e6
                for _ in range(options.warmup):
                    model.invoke()
                models.append(bench)
                inputs.append(source)

        before = probe.snapshot(core)
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            for r in range(options.repeats):
                for bench in models:
                    say(f"repeat {r + 1}/{options.repeats}: {bench.name}")
                    total, times = _time_block(bench.model.invoke, options.runs)
                    bench.totals_s.append(total)
                    bench.latencies_ns.extend(times)
        finally:
            if gc_was_enabled:
                gc.enable()
        after = probe.snapshot(core)

    result = _result(models, inputs, options, cores, runtime, probe, before, after)
    return BenchRun(result, {bench.name: bench.latencies_ns for bench in models})


def _result(models: list[BenchModel], inputs: list[str], options: BenchOptions,
            cores: list[int],
            runtime: RuntimeInfo, probe: Probe, before: dict[str, Any],
            after: dict[str, Any]) -> dict[str, Any]:
    rows = []
    warnings: list[str] = []
    for bench, source in zip(models, inputs, strict=True):
        totals = np.asarray(bench.totals_s)
        m = bench.model
        nodes = m.delegate_nodes()
        rows.append({
            "name": bench.name, "path": str(bench.path), "sha256": sha256_file(bench.path),
            "input_dtype": m.input_quant.dtype.name, "input": source,
            "xnnpack_requested": m.xnnpack, "delegate": m.delegate, "delegate_nodes": nodes,
            "time_s": float(totals.mean()), "time_s_std": float(totals.std()),
            "totals_s": [float(t) for t in totals],
            "per_inference_ms": latency_stats(bench.latencies_ns),
            "first_inference_ms": bench.first_ms, "load_ms": m.load_seconds * 1000.0,
        })
        if m.xnnpack and nodes == 0:
            warnings.append(f"XNNPACK delegate NOT in use for {bench.name}: it runs on the "
                            "built-in kernels, and grouped convolutions are slow there")
    times = [row["time_s"] for row in rows]
    ratios = [[a / b for b in times] for a in times]
    check = _xnnpack_check(rows, warnings) if options.xnnpack_check else None
    status = assess(before, after)
    status["reasons"] += noise_reasons(rows)
    status["suspect"] = bool(status["reasons"])
    changes = [f"{key} {value}" for key, value, want in (
        ("runs", options.runs, PROTOCOLS["paper"]["runs"]),
        ("repeats", options.repeats, PROTOCOLS["paper"]["repeats"]),
        ("threads", options.threads, 1)) if value != want]
    paper = options.protocol == "paper" and not changes
    return {
        "protocol": options.protocol + (f" (changed: {', '.join(changes)})" if changes else ""),
        "paper_protocol": paper,
        "runs": options.runs, "repeats": options.repeats, "warmup": options.warmup,
        "threads": options.threads, "core": cores[0], "cores": cores,
        "models": rows,
        "ratios": {"names": [row["name"] for row in rows], "matrix": ratios},
        "xnnpack_check": check,
        "warnings": warnings,
        "environment": {**probe.record(cores[0], {**runtime.describe(), "delegates": {
                            row["name"]: row["delegate"] for row in rows}}),
                        "before": before, "after": after},
        **status,
    }


def _xnnpack_check(rows: list[dict[str, Any]], warnings: list[str]) -> list[dict[str, Any]]:
    by_name = {row["name"]: row for row in rows}
    checks = []
    for row in rows:
        plain = by_name.get(f"{row['name']} (no XNNPACK)")
        if not row["xnnpack_requested"] or plain is None:
            continue
        speedup = plain["time_s"] / row["time_s"]
        checks.append({"name": row["name"], "with_xnnpack_s": row["time_s"],
                       "without_xnnpack_s": plain["time_s"], "speedup": speedup,
                       "delegate": row["delegate"]})
        if row["delegate_nodes"] > 0 and speedup < 1.2:
            warnings.append(f"XNNPACK is applied to {row['name']} but gives only "
                            f"{speedup:.2f}x over the built-in kernels")
    return checks


# ------------------------------------------------------------------ output
def format_result(result: dict[str, Any]) -> str:
    """The human-readable report of :func:`run_bench`'s result."""
    env = result["environment"]
    runtime = env["runtime"]
    w = max(len(row["name"]) for row in result["models"]) + 2
    lines = [f"protocol: {result['protocol']}: {result['runs']} passes x {result['repeats']} "
             f"repeats (+{result['warmup']} warm-up) on "
             + (f"core {result['core']}" if len(result.get("cores", [0])) == 1
                else f"cores {', '.join(map(str, result['cores']))}") + ", "
             f"{result['threads']} thread(s)",
             f"runtime: {runtime.get('name')} {runtime.get('version')}; board: {env['board']}; "
             f"cpu: {env['cpu']} "
             f"({describe_int8_features(env.get('int8_features', UNKNOWN))})",
             "",
             f"{'model':<{w}}{'time (s)':>10}{'mean':>8}{'median':>8}{'p90':>8}{'p99':>8}"
             f"{'std':>8}{'min':>8}{'first':>8}{'load':>8}  delegate"]
    for row in result["models"]:
        s = row["per_inference_ms"]
        lines.append(f"{row['name']:<{w}}{row['time_s']:>10.4f}{s['mean']:>8.3f}"
                     f"{s['median']:>8.3f}{s['p90']:>8.3f}{s['p99']:>8.3f}{s['std']:>8.3f}"
                     f"{s['min']:>8.3f}{row['first_inference_ms']:>8.3f}{row['load_ms']:>8.1f}"
                     f"  {row['delegate']}")
    lines.append("(time: mean over repeats of the total of the passes, the paper's Time (s); "
                 "other columns in ms per inference)")
    names = result["ratios"]["names"]
    if len(names) > 1:
        lines += ["", "ratios (row time / column time):",
                  " " * (w + 3) + "".join(f"{i + 1:>10}" for i in range(len(names)))]
        for i, (name, row) in enumerate(zip(names, result["ratios"]["matrix"], strict=True)):
            lines.append(f"{i + 1:>2} {name:<{w}}" + "".join(f"{v:>10.3f}" for v in row))
    for check in result["xnnpack_check"] or []:
        lines.append(f"XNNPACK check {check['name']}: {check['with_xnnpack_s']:.4f} s with, "
                     f"{check['without_xnnpack_s']:.4f} s without: {check['speedup']:.2f}x")
    before, after = env["before"], env["after"]
    lines += ["", f"governor {before['governor']}, frequency "
                  f"{_unit(before['frequency_mhz'], 'MHz')}; temperature "
                  f"{_unit(before['temperature_c'], '°C')} -> "
                  f"{_unit(after['temperature_c'], '°C')} (vcgencmd "
                  f"{_unit(before['vcgencmd_temperature_c'], '°C')} -> "
                  f"{_unit(after['vcgencmd_temperature_c'], '°C')})"]
    if result["suspect"]:
        lines.append("SUSPECT RUN:")
        lines += [f"  - {reason}" for reason in result["reasons"]]
    for note in result["unverified"]:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def _unit(value: Any, unit: str) -> str:
    return f"{value:g} {unit}" if isinstance(value, (int, float)) else str(value)


def check_histogram_target(path: str | Path) -> Path:
    """Before any timing: matplotlib is there and the histogram's folder is writable."""
    pyplot()
    return check_plot_target(path, "latency.png")


def check_latencies_target(path: str | Path) -> Path:
    """Before any timing: the latencies file could be written (it is replaced if there),
    and its name does not promise another format (``lat.csv`` would have held JSON)."""
    suffix = Path(path).suffix
    if suffix and suffix.lower() != ".json":
        raise BenchError(f"{path}: the latencies are written as JSON; name the file .json")
    return check_output_file(path, force=True)


def write_latencies(run: BenchRun, path: str | Path) -> Path:
    """Every timed pass's latency, per model, as JSON ``{"unit": "ns", "models": {...}}``:
    for one's own analysis, or a histogram drawn elsewhere (``remote bench --plot``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps({"unit": "ns", "models": run.latencies_ns}))
    return path


MAX_LATENCY_NS = 10**12  # 1000 s: no pass takes longer; a larger figure is not a timing
MAX_LATENCIES_BYTES = 256 << 20  # MAX_PASSES timings per model, a few models, as JSON


def _is_latency(value: Any) -> bool:
    return type(value) is int and 0 < value <= MAX_LATENCY_NS  # bool is no timing


def read_latencies(path: str | Path) -> dict[str, list[int]]:
    """The per-model latencies :func:`write_latencies` wrote; :class:`BenchError` if not
    (also for one that came from elsewhere, such as a device: sizes and values checked)."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_LATENCIES_BYTES:
            raise ValueError(f"larger than {MAX_LATENCIES_BYTES >> 20} MB")
        data = json.loads(path.read_text(encoding="utf-8"))
        models = data["models"]
        ok = data["unit"] == "ns" and isinstance(models, dict) and all(
            isinstance(name, str) and isinstance(v, list) and v and all(map(_is_latency, v))
            for name, v in models.items())
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise BenchError(f"{path}: not a latencies file ({exc})") from None
    if not ok or not models:
        raise BenchError(f"{path}: not a latencies file (each model needs passes of 1 ns to "
                         f"{MAX_LATENCY_NS:,} ns)")
    return models


def plot_histogram(run: BenchRun, path: str | Path) -> Path:
    """Write a per-inference latency histogram PNG (needs matplotlib); returns its path.

    A folder gets ``latency.png`` inside it; a name without a suffix gets ``.png``.
    """
    result, latencies = run.result, run.latencies_ns
    plt = pyplot()
    path = png_path(path, "latency.png")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    all_ms = np.concatenate([np.asarray(v, np.float64) / 1e6 for v in latencies.values()])
    low = float(all_ms.min())
    high = max(float(np.percentile(all_ms, 99.5)), low * 1.01)
    spread = high / low > 5  # models far apart: log-spaced bins keep each one visible
    bins = np.geomspace(low, high, 100) if spread else np.linspace(low, high, 80)
    for name, values in latencies.items():
        ms = np.asarray(values, np.float64) / 1e6
        ax.hist(np.clip(ms, None, bins[-1]), bins=bins, alpha=0.6,
                label=f"{name} (median {np.median(ms):.3f} ms)")
    if spread:
        ax.set_xscale("log")
    env = result["environment"]
    ax.set_xlabel("latency per inference (ms), clipped at p99.5")
    ax.set_ylabel("passes")
    ax.set_title(f"{env['board']}, core {result['core']}, {env['runtime'].get('name')}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    return path
