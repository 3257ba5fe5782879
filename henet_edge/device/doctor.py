"""``henet-edge doctor``: can this machine classify, and how fast will it time?

Each check has a status (``ok``, ``warn`` or ``fail``), what was found and,
for a problem, the command that fixes it. A ``fail`` means classification
cannot work; the command then exits non-zero. TensorFlow is never imported:
it is only looked up as an installed package.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import platform
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from henet_edge import HenetEdgeError

from .bundle import load_bundle
from .environment import GOVERNOR_FIX, UNKNOWN, Probe
from .runtime import RuntimeInfo, _load

MIN_PYTHON = (3, 10)
LOW_DISK_BYTES = 200 * 1024 * 1024
HOT_C = 75.0
LITERT_FIX = "pip install ai-edge-litert"


@dataclass
class Check:
    """One line of the report."""

    name: str
    status: str  # ok | warn | fail
    detail: str
    fix: str = ""


def _version(*dists: str) -> str | None:
    for dist in dists:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def check_architecture(machine: str | None = None) -> Check:
    machine = machine or platform.machine()
    if machine in ("aarch64", "arm64", "x86_64", "AMD64"):
        return Check("architecture", "ok", machine)
    if machine.startswith("armv7") or machine.startswith("armv6"):
        return Check("architecture", "fail", f"{machine}: 32-bit ARM has no ai-edge-litert "
                     "wheels", "install the 64-bit Raspberry Pi OS (aarch64)")
    return Check("architecture", "warn", f"{machine}: no known runtime wheels",
                 "use an aarch64 or x86_64 machine")


def check_python(version: tuple[int, ...] | None = None) -> Check:
    version = version or sys.version_info[:3]
    text = ".".join(map(str, version))
    if tuple(version[:2]) < MIN_PYTHON:
        return Check("python", "fail", f"Python {text} (needs 3.10 or newer)",
                     "use Raspberry Pi OS Bookworm or newer (Python 3.11+)")
    return Check("python", "ok", f"Python {text} ({sys.executable})")


def check_numpy(numpy_version: str, tflite_runtime_installed: bool,
                litert_ok: bool) -> Check:
    """tflite_runtime's last wheels (2.14) were built against numpy 1.x."""
    major = int(numpy_version.split(".")[0])
    if tflite_runtime_installed and major >= 2:
        status = "warn" if litert_ok else "fail"
        return Check("numpy", status, f"numpy {numpy_version}: tflite_runtime needs numpy<2",
                     f"{LITERT_FIX}  (or: pip install 'numpy<2' to keep tflite_runtime)")
    return Check("numpy", "ok", f"numpy {numpy_version}")


def check_runtimes() -> tuple[list[Check], RuntimeInfo | None]:
    """Interpreters found (LiteRT and tflite_runtime imported; TensorFlow only looked up)."""
    checks = []
    litert = _load("ai_edge_litert")
    legacy = _load("tflite_runtime")
    tf_installed = importlib.util.find_spec("tensorflow") is not None
    if litert:
        checks.append(Check("runtime ai_edge_litert", "ok", f"version {litert.version}"))
    else:
        checks.append(Check("runtime ai_edge_litert", "warn", "not importable", LITERT_FIX))
    legacy_installed = importlib.util.find_spec("tflite_runtime") is not None
    if legacy:
        checks.append(Check("runtime tflite_runtime", "warn" if not litert else "ok",
                            f"version {legacy.version} (int8 on slow reference kernels)",
                            LITERT_FIX if not litert else ""))
    elif legacy_installed:
        checks.append(Check("runtime tflite_runtime", "warn",
                            "installed but fails to import (numpy 2?)",
                            f"pip uninstall tflite-runtime && {LITERT_FIX}"))
    if tf_installed:
        version = _version("tensorflow", "tensorflow-cpu") or "?"
        detail = f"tensorflow {version} installed (desktop fallback; slow to import)"
        checks.append(Check("runtime tensorflow", "ok" if litert or legacy else "warn", detail,
                            "" if litert or legacy else LITERT_FIX))
    chosen = litert or legacy
    numpy_check = check_numpy(np.__version__, legacy_installed, litert is not None)
    checks.append(numpy_check)
    if chosen is None and not tf_installed:
        checks.append(Check("runtime", "fail", "no TFLite runtime found", LITERT_FIX))
    elif chosen is None:
        checks.append(Check("runtime", "warn", "only TensorFlow's interpreter (desktop): "
                            "classification works but starts slowly", LITERT_FIX))
    else:
        checks.append(Check("runtime", "ok", f"classify will use {chosen.name} {chosen.version}"))
    return checks, chosen


def check_cameras(probe: Probe) -> Check:
    found: list[str] = []
    notes: list[str] = []
    if importlib.util.find_spec("picamera2") is not None:
        try:
            from picamera2 import Picamera2

            cameras = Picamera2.global_camera_info()
            found += [f"picamera2:{i} ({c.get('Model', '?')})" for i, c in enumerate(cameras)]
            if not cameras:
                notes.append("picamera2 sees no camera")
        except Exception as exc:  # libcamera errors come in many types
            notes.append(f"picamera2 fails: {exc}")
    else:
        notes.append("picamera2 not importable")
    try:
        videos = sorted(p.name for p in probe.path("/dev").glob("video*"))
    except OSError:
        videos = []
    has_cv2 = importlib.util.find_spec("cv2") is not None
    if videos:
        if has_cv2:
            found += [f"opencv:{v.removeprefix('video')}" for v in videos
                      if v.removeprefix("video").isdigit()]
        else:
            notes.append(f"/dev/{videos[0]} exists but OpenCV is not installed")
    if found:
        return Check("cameras", "ok", ", ".join(found))
    fix = ("Pi camera: sudo apt install python3-picamera2 (venv made with "
           "--system-site-packages); USB camera: pip install opencv-python-headless")
    return Check("cameras", "warn", "none found (" + "; ".join(notes) + "); files and "
                 "folders still classify", fix)


def check_machine(probe: Probe) -> list[Check]:
    """Governor, temperature and throttling of the CPU (core 0 stands for all)."""
    snap = probe.snapshot(0)
    checks = []
    gov = snap["governor"]
    if gov == "performance":
        checks.append(Check("governor", "ok", gov))
    elif gov == UNKNOWN:  # no cpufreq: a VM or container, whose host sets the clock
        checks.append(Check("governor", "warn", "unknown (no cpufreq in /sys: a virtual "
                            "machine or container, whose host sets the clock); timings "
                            "may vary"))
    else:
        checks.append(Check("governor", "warn", f"{gov}: timings vary with the clock",
                            GOVERNOR_FIX))
    temp = snap["vcgencmd_temperature_c"]
    temp = snap["temperature_c"] if temp == "unknown" else temp
    if isinstance(temp, float) and temp >= HOT_C:
        checks.append(Check("temperature", "warn", f"{temp:.1f} °C: throttling likely",
                            "add a heatsink or fan; let it cool before timing"))
    else:
        checks.append(Check("temperature", "ok", f"{temp} °C" if temp != "unknown" else temp))
    throttled = snap["throttled"]
    if not isinstance(throttled, dict):
        checks.append(Check("throttling", "ok", "unknown (no vcgencmd)"))
    elif throttled["now"] or throttled["since_boot"]:  # the governor has its own line
        bits = ", ".join(throttled["now"] + throttled["since_boot"])
        checks.append(Check("throttling", "warn", f"{throttled['raw']}: {bits}",
                            "use the official 5V power supply and cooling; reboot to clear"))
    else:
        checks.append(Check("throttling", "ok", f"{throttled['raw']}: none"))
    return checks


def check_disk(path: Path) -> Check:
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        free = shutil.disk_usage(path).free
    except OSError as exc:
        return Check("disk", "warn", f"cannot read free space: {exc}")
    detail = f"{free / 1e9:.1f} GB free at {path}"
    if free < LOW_DISK_BYTES:
        return Check("disk", "warn", detail, "free some space (sudo apt clean; remove old "
                     "bundles under the henet-edge home)")
    return Check("disk", "ok", detail)


def check_bundle(model: str | Path | None) -> tuple[Check, Path | None]:
    """The bundle classify would use (``--model`` or the default), hashes verified."""
    from .classify import default_model

    try:
        path = Path(model).expanduser() if model is not None else default_model()
    except HenetEdgeError as exc:
        return Check("bundle", "fail", str(exc),
                     "henet-edge deploy --host THIS_DEVICE (from the desktop)"), None
    if path.is_file() and path.suffix == ".tflite":
        return Check("bundle", "ok", f"{path} (bare .tflite, not verified)"), path
    try:
        bundle = load_bundle(path)
    except HenetEdgeError as exc:
        return Check("bundle", "fail", str(exc),
                     "re-deploy the bundle (henet-edge deploy) or pass a good --model"), None
    files = len(bundle.manifest.files)
    name = bundle.manifest.name or bundle.root.name
    return Check("bundle", "ok", f"{name} at {bundle.root.resolve()}: {files} files match "
                 f"their sha256; id {bundle.id[:16]}; models {', '.join(bundle.precisions)}"), path


def check_classify(model: Path, runtime: RuntimeInfo,
                   labels: str | Path | None = None) -> list[Check]:
    """Load the model (a bare ``.tflite`` with ``labels``) and classify one synthetic
    image end to end."""
    from PIL import Image

    from .classify import Classifier

    checks = []
    fix = ("pass --labels FILE (one label per line) for a bare .tflite"
           if model.suffix == ".tflite" else "re-deploy the bundle")
    try:
        classifier = Classifier(model, labels=labels, runtime=runtime)
        prediction = classifier.classify_image(Image.new("RGB", (64, 48), (120, 130, 140)))
    except HenetEdgeError as exc:
        return [Check("classify", "fail", str(exc), fix)]
    except Exception as exc:  # any failure here means classify cannot work
        return [Check("classify", "fail", f"{type(exc).__name__}: {exc}", fix)]
    probs = [p for _, p in prediction.top]
    if not all(0.0 <= p <= 1.0 for p in probs):
        return [Check("classify", "fail", f"invalid probabilities {probs}", "re-deploy")]
    checks.append(Check("classify", "ok", f"{classifier.precision} model runs: "
                        f"{prediction.timings_ms['invoke']:.2f} ms invoke"))
    delegate, kind = classifier.model.delegate, classifier.model.delegate_kind
    if kind == "partial":
        checks.append(Check("delegate", "warn", f"{delegate}: those ops run slowly",
                            "convert the model again with this henet-edge (its op audit "
                            "refuses such graphs)"))
    elif kind in ("full", "unverified"):
        checks.append(Check("delegate", "ok", delegate))
    else:
        checks.append(Check("delegate", "warn", f"{delegate}: grouped convolutions will be "
                            "slow", LITERT_FIX))
    return checks


def run_doctor(model: str | Path | None = None, probe: Probe | None = None,
               home: Path | None = None, labels: str | Path | None = None) -> list[Check]:
    """Every check, in order."""
    from .classify import edge_home

    probe = probe or Probe()
    checks = [check_architecture(), check_python()]
    runtime_checks, runtime = check_runtimes()
    checks += runtime_checks
    checks.append(check_cameras(probe))
    checks += check_machine(probe)
    checks.append(check_disk(home or edge_home()))
    bundle_check, model_path = check_bundle(model)
    checks.append(bundle_check)
    if model_path is not None and runtime is not None:
        checks += check_classify(model_path, runtime, labels)
    return checks


def healthy(checks: list[Check]) -> bool:
    """True if nothing failed (classification can work)."""
    return all(c.status != "fail" for c in checks)


def format_checks(checks: list[Check]) -> str:
    marks = {"ok": " ok ", "warn": "warn", "fail": "FAIL"}
    lines = []
    for c in checks:
        lines.append(f"[{marks.get(c.status, c.status)}] {c.name}: {c.detail}")
        if c.fix and c.status != "ok":
            lines.append(f"       fix: {c.fix}")
    return "\n".join(lines)


def to_json(checks: list[Check]) -> dict[str, Any]:
    return {"ok": healthy(checks), "checks": [asdict(c) for c in checks]}
