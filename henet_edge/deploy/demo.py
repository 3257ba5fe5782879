"""``henet-edge demo``: the whole pipeline on this machine (or one device) in minutes.

1. take a trained model (the shipped default, or ``--model``),
2. convert it to float32 and int8 TFLite with its calibration set (audit, report card),
3. deploy the bundle to a local target folder laid out exactly like a Pi, through the
   same installer as SSH deploy (only the connection differs) - or to ``--host``,
4. time both precisions with the paper's protocol on one core, interleaved,
5. classify sample images with the installed bundle,
6. print one summary table.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from henet_edge import HenetEdgeError
from henet_edge.convert.lowering import DEFAULT_LOWERING
from henet_edge.device.bundle import MANIFEST, load_bundle
from henet_edge.device.classify import DEFAULT_BUNDLE
from henet_edge.device.manifest import CALIBRATION_FILE, SOURCE_MODEL, VALIDATION_FILE

from .connection import Log
from .fleet import FleetOptions

DEFAULT_CALIBRATION = DEFAULT_BUNDLE / CALIBRATION_FILE
DEFAULT_VALIDATION = DEFAULT_BUNDLE / VALIDATION_FILE  # held-out images of the default run


class DemoError(HenetEdgeError):
    pass


SPEEDS = {"quick": (100, 2), "default": (300, 3), "full": (1000, 5)}  # (runs, repeats)
# What to try when int8 loses: the lowering decides which int8 kernels run.
INT8_SLOWER = ("int8 is slower than float32 here: how the grouped convs are lowered decides "
               "which int8 kernels run; `henet-edge compare --lowering folded,dense` times "
               "both on this CPU, and `convert --lowering` picks one")


@dataclass
class DemoOptions:
    model: Path | None = None  # run folder or .keras; default: the shipped default model
    calibration: str | None = None  # .npz or data source; default: the shipped set
    val_data: str | None = None  # accuracy on: default the shipped held-out sample
    runs: int = SPEEDS["default"][0]
    repeats: int = SPEEDS["default"][1]
    core: int | None = None
    images: list[Path] | None = None  # default: the bundle's golden images
    gate: bool = True
    lowering: str = DEFAULT_LOWERING  # how convert lowers the grouped convs
    verbose: bool = False  # show the device runtime's own log lines too
    fleet: FleetOptions | None = None  # --host: demo on these devices (the first's summary)

    def at_speed(self, speed: str | None) -> DemoOptions:
        """Set the bench length from ``quick``, ``full`` or None (the default)."""
        self.runs, self.repeats = SPEEDS[speed or "default"]
        return self


def device_errors(log: Log, verbose: bool) -> Log:
    """The device's stderr, without the runtime's ``INFO:`` lines (XNNPACK) unless verbose."""
    return log if verbose else (lambda line: None if line.startswith("INFO: ") else log(line))


def _default_model() -> Path:
    source = DEFAULT_BUNDLE / SOURCE_MODEL
    if not source.is_file():
        raise DemoError("no default model is shipped with this install; pass --model "
                        "RUN_DIR_OR_MODEL.keras (e.g. a `henet-edge train` run folder)")
    return source


def check_core_free(core: int | None) -> int:
    """The core to time on here; refuse when no core is free (timings would mislead)."""
    from henet_edge.device.bench import check_core, default_core

    if core is not None:  # the user chose the core: time there, whatever the load
        return check_core(core)
    load = os.getloadavg()[0]
    if load >= (os.cpu_count() or 1) + 0.5:
        raise DemoError(f"no free core: load average {load:.1f} on {os.cpu_count()} cores; "
                        "timings would be meaningless (stop other work, or pass --core N "
                        "to time anyway)")
    return check_core(default_core())


def convert_default(options: DemoOptions, out: Path, log: Log) -> dict:
    """Step 1: convert the model with its calibration set (audit and report card)."""
    from henet_edge.convert.pipeline import ConvertOptions, convert

    model = _default_model() if options.model is None else options.model
    calibration = str(DEFAULT_CALIBRATION) if options.calibration is None else options.calibration
    val_data, labels, preprocessing = options.val_data, None, None
    if options.model is None:  # the shipped .keras: labels, preprocessing and held-out
        bundle = load_bundle(DEFAULT_BUNDLE)  # images are the default bundle's (verified)
        labels, preprocessing = bundle.labels, str(bundle.root / MANIFEST)
        if val_data is None and DEFAULT_VALIDATION.name in bundle.manifest.files:
            val_data = str(bundle.file(DEFAULT_VALIDATION.name))
    log(f"1/4 convert {model}: float32 + int8 TFLite ({options.lowering} lowering), op audit, "
        "report card")
    return convert(model, calibration, out,
                   ConvertOptions(val_data=val_data, gate=options.gate, labels=labels,
                                  preprocessing=preprocessing, lowering=options.lowering),
                   log=lambda m: log(f"    {m}"))


@contextmanager
def local_installer(target: Path, log: Log) -> Iterator:
    """The SSH installer over a local folder laid out exactly like a device."""
    from .connection import LocalConnection
    from .installer import Installer, InstallOptions

    _check_writable(target)
    target = target.expanduser().resolve()
    options = InstallOptions(remote_dir=str(target), device_python=sys.executable,
                             remote_python=sys.executable)
    with LocalConnection(name=f"local:{target}") as connection:
        yield Installer(connection, options, log=log, progress=False)


def demo_on(installer, bundle_dir: Path, manifest: dict, options: DemoOptions, work: Path,
            log: Log) -> dict:
    """Steps 2-4 on one target: deploy, bench both precisions, classify samples."""
    from .remote import remote_bench, remote_classify

    t0 = time.perf_counter()
    log(f"2/4 deploy to {installer.name}")
    deployed = installer.deploy(bundle_dir)
    log(f"3/4 bench: {options.repeats} x {options.runs} passes per precision, one core, "
        "interleaved")
    args = ["--precision", "all", "--runs", str(options.runs), "--repeats",
            str(options.repeats)]
    if options.core is not None:
        args += ["--core", str(options.core)]
    bench, _ = remote_bench(installer, args, out_path=work / "bench.json",
                            err=lambda m: None)
    log("4/4 classify sample images with the installed bundle")
    bundle = load_bundle(bundle_dir)
    golden = bundle.golden()["images"]
    images = [str(p) for p in (options.images or [bundle_dir / e["file"] for e in golden])]
    truth = {} if options.images else {Path(e["file"]).name: e["label"] for e in golden}
    classified = []
    for precision in ("int8", "float32"):
        lines: list[str] = []
        remote_classify(installer, images, precision=precision, top_k=1, as_json=True,
                        out=lines.append, err=device_errors(log, options.verbose))
        classified += [{"precision": precision, **json.loads(x)} for x in lines
                       if x.strip().startswith("{")]
    for c in classified:  # the golden images' own labels, to count the right answers
        c["truth"] = truth.get(Path(c.get("path", "")).name)
    timing = {row["name"].split("/")[-1]: row for row in bench["models"]}
    if set(timing) != {"int8", "float32"}:
        raise DemoError(f"bench timed {sorted(timing)}, expected int8 and float32")
    return {
        "target": installer.name, "bundle": deployed.bundle, "report": manifest["report"],
        "sizes": {p: (bundle_dir / manifest["models"][p]["file"]).stat().st_size
                  for p in ("float32", "int8")},
        "latency": {p: {"time_s": r["time_s"], **r["per_inference_ms"]}
                    for p, r in timing.items()},
        "speedup_int8": timing["float32"]["time_s"] / timing["int8"]["time_s"],
        "selftest": deployed.selftest, "runtime": deployed.runtime,
        "classified": classified, "environment": bench.get("environment", {}),
        "protocol": bench.get("protocol"), "paper_protocol": bench.get("paper_protocol"),
        "runs": bench.get("runs"),
        "repeats": bench.get("repeats"), "suspect": bench.get("suspect"),
        "suspect_reasons": bench.get("reasons", []),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def run_demo(options: DemoOptions, log: Log, *, target: Path | None = None,
             keep: bool = False) -> dict:
    """Convert, then deploy, bench and classify: on a local target, or ``options.fleet``.

    On devices, the summary is the first one's. Locally, the target is
    ``target``, else a temporary folder: removed at the end unless ``keep``;
    the summary says which.
    """
    if options.fleet is None:
        options.core = preflight_local(target, options.core)
    else:
        hosts = options.fleet.resolve_before_slow_work()  # a bad --host: before converting
    with tempfile.TemporaryDirectory(prefix="henet-demo-") as tmp:
        work = Path(tmp)
        manifest = convert_default(options, work / "bundle", log)
        if options.fleet is not None:
            return _demo_on_fleet(options.fleet, hosts, work, manifest, options, log)
        device = target
        if device is None:
            device = (Path(tempfile.mkdtemp(prefix="henet-demo-device-")) if keep
                      else work / "device")
        with local_installer(device, log) as installer:
            summary = demo_on(installer, work / "bundle", manifest, options, work, log)
    summary["target_kept"] = target is not None or keep
    if not summary["target_kept"]:
        summary["target_note"] = ("a temporary folder, deleted when the demo ended; --keep "
                                  "or --target DIR keeps it")
    return summary


def _demo_on_fleet(fleet: FleetOptions, hosts: list[str], work: Path, manifest: dict,
                   options: DemoOptions, log: Log) -> dict:
    from .fleet import on_fleet, raise_for_failures
    from .installer import InstallOptions
    from .wheel import project_wheel

    outcomes = on_fleet(fleet, lambda inst: demo_on(inst, work / "bundle", manifest, options,
                                                    work, log),
                        install_options=InstallOptions(wheel=project_wheel(log=log)),
                        log=lambda host, message: log(f"[{host}] {message}"), hosts=hosts)
    raise_for_failures(outcomes, log)
    return outcomes[0].result or {}


def _check_writable(target: Path) -> None:
    """Create (and remove) a folder where the target will be: the only honest check.

    A target holding files the demo did not make is refused here, before any conversion,
    as the installer would refuse it later.
    """
    from .agent import refusal

    problem = refusal(str(target.expanduser())) or {}
    if problem.get("error") == "foreign":
        more = problem["count"] - len(problem["entries"])
        raise DemoError(f"--target {target} is not empty and was not made by henet-edge "
                        f"(it holds {', '.join(problem['entries'])}"
                        + (f" and {more} more" if more > 0 else "") + "); give a new or "
                        "empty folder, or one an earlier demo made")
    probe = target.expanduser()
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise DemoError(f"{target}: {probe} is not a folder (pick another --target)")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".henet-edge-probe-", dir=probe))
    except OSError as exc:
        raise DemoError(f"{target}: cannot write in {probe} ({exc.strerror}); pick another "
                        "--target") from None


def _check_device_runtime() -> str:
    """The runtime a Pi would use (LiteRT or tflite-runtime; TensorFlow does not count)."""
    from henet_edge.device.runtime import RuntimeMissing, find_runtime

    for name in ("ai_edge_litert", "tflite_runtime"):
        try:
            return find_runtime(name).name
        except RuntimeMissing:
            continue
    raise DemoError("no device runtime: the local target runs the device side, which needs "
                    "LiteRT; `pip install ai-edge-litert` (or `pip install "
                    "'henet-edge[device]'`)")


def preflight_local(target: Path | None, core: int | None) -> int:
    """Fail fast, before any conversion: a free core, a writable target, a device runtime.

    Returns the core to time on.
    """
    chosen = check_core_free(core)
    if target is not None:
        _check_writable(target)
    _check_device_runtime()
    return chosen


def protocol_line(s: dict) -> str:
    """Which timing protocol ran, in words, and how it differs from the paper's."""
    from henet_edge.device.bench import PROTOCOLS
    from henet_edge.device.environment import UNKNOWN, describe_int8_features

    env = s["environment"]
    paper = PROTOCOLS["paper"]
    line = (f"Time (s): the total time of {s['runs']} passes of one image, averaged over "
            f"{s['repeats']} repeats, one thread on one core of "
            f"{env.get('cpu', 'an unknown CPU')} "
            f"({describe_int8_features(env.get('int8_features', UNKNOWN))}); ")
    if s.get("paper_protocol"):
        return line + "the paper's protocol"
    return line + (f"the paper's protocol is {paper['runs']} passes x {paper['repeats']} "
                   "repeats (`demo --full` runs it)")


def selftest_phrase(text: str) -> str:
    """``int8 8/8, float32 8/8`` said as what it is: outputs matched, not labels right."""
    if not any(c.isdigit() for c in text):  # skipped, no results
        return text
    return f"the converter's outputs reproduced on {text} golden images"


def classified_line(classified: list[dict]) -> str:
    """How the sample images were classified: how many were read, and how many right."""
    ok = [c for c in classified if c.get("ok")]
    precisions = list(dict.fromkeys(c["precision"] for c in classified))
    per = len(classified) // max(1, len(precisions))
    line = f"classified {per} sample images x {len(precisions)} precisions"
    if len(ok) < len(classified):
        line += f" ({len(classified) - len(ok)} unreadable)"
    judged = [c for c in ok if c.get("truth") and c.get("top")]
    if judged:
        line += "; top-1 right: " + ", ".join(
            f"{p} {sum(c['top'][0]['label'] == c['truth'] for c in judged if c['precision'] == p)}"
            f"/{sum(c['precision'] == p for c in judged)}" for p in precisions)
    examples = [f"{Path(c['path']).name} -> {c['top'][0]['label']}" for c in ok[:3]
                if c.get("top")]
    return line + ("; e.g. " + ", ".join(examples) if examples else "")


def format_summary(s: dict) -> str:
    r = s["report"]
    lines = [
        "",
        f"{'':<10}{'accuracy':>10}{'size':>10}{'Time (s)':>15}{'median ms':>11}"
        f"{'p90 ms':>9}",
    ]
    for p, acc in (("float32", r["float32_top1"]), ("int8", r["int8_top1"])):
        lat = s["latency"][p]
        lines.append(f"{p:<10}{100 * acc:>9.2f}%{s['sizes'][p] / 1024:>8.0f}KB"
                     f"{lat['time_s']:>15.3f}{lat['median']:>11.3f}{lat['p90']:>9.3f}")
    lines += [
        f"int8 speed-up over float32: {s['speedup_int8']:.2f}x   "
        f"(int8 top-1 agreement with Keras {100 * r['int8_agreement']:.2f}%)",
        *([INT8_SLOWER] if s["speedup_int8"] < 1 else []),
        f"accuracy on: {r['data']} ({r['images']} images)",
        protocol_line(s),
        f"self-test on {s['target']}"
        + (f" ({s['target_note']})" if s.get("target_note") else "")
        + f": {selftest_phrase(s['selftest'].get('text', '?'))}",
    ]
    lines.append(classified_line(s["classified"]))
    if s.get("suspect"):
        lines.append("timing marked SUSPECT: " + "; ".join(s.get("suspect_reasons", [])))
    lines.append(f"deploy, bench and classify took {s['seconds']:.0f}s")
    return "\n".join(lines)
