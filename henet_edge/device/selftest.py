"""The on-device self-test: do the bundle's golden images reproduce here?

At conversion the desktop saves a few golden images in the bundle
(``golden.json``, written by :mod:`henet_edge.convert.bundle_writer`)::

    {"images": [{"file": "golden/00_cat.png", "label": "cat",
                 "keras":   {"top1": 3, "logits": [...]},
                 "float32": {"top1": 3, "logits": [...]},
                 "int8":    {"top1": 3, "logits": [...]}}, ...]}

The device decodes each PNG with its own decode and preprocessing path,
runs each precision's model with its own runtime, and compares with the
desktop's TFLite results:

* logits: ``max |device - desktop|`` within a tolerance. float32 allows
  ``atol + rtol * max|desktop logit|`` (different CPUs sum in different
  orders); int8 allows ``int8_steps`` quantisation steps of the output
  tensor (kernels may round one intermediate value differently).
* top-1: the same class, unless the desktop's two candidates are within the
  tolerance of each other on the device (a genuine tie).

Everything is returned as one JSON-able dict; ``henet-edge selftest BUNDLE
--json`` prints it, and deploy runs that on the device before switching to
the bundle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from henet_edge import HenetEdgeError

from .bundle import PRECISIONS, load_bundle
from .preprocess import open_image, preprocess_image
from .runtime import TFLiteModel, find_runtime

FLOAT_ATOL = 1e-3
FLOAT_RTOL = 1e-3
INT8_STEPS = 2.0


class SelftestError(HenetEdgeError, ValueError):
    """A bundle that cannot be self-tested (no golden images, unknown precision)."""


def tolerance(expected: np.ndarray, output_scale: float, *,
              atol: float = FLOAT_ATOL, rtol: float = FLOAT_RTOL,
              int8_steps: float = INT8_STEPS) -> float:
    """The largest logit difference accepted for these logits and this output (a quantised
    one, ``output_scale > 0``, is allowed a few steps of its grid)."""
    tol = atol + rtol * float(np.max(np.abs(expected))) if expected.size else atol
    if output_scale > 0:  # quantised output: a few steps of its grid
        tol = max(tol, int8_steps * output_scale)
    # Logits that differ by exactly N grid steps must pass: float rounding of
    # (q - zero) * scale can put them a hair above N * scale.
    return tol * (1 + 1e-6)


def compare(expected_logits, got_logits, tol: float) -> dict[str, Any]:
    """Top-1 and logit agreement of one image (device ``got`` vs desktop ``expected``)."""
    expected = np.asarray(expected_logits, dtype=np.float64).reshape(-1)
    got = np.asarray(got_logits, dtype=np.float64).reshape(-1)
    if expected.shape != got.shape:
        return {"passed": False, "reason": f"{got.size} logits on the device, "
                f"{expected.size} expected", "max_abs_diff": None}
    diff = float(np.max(np.abs(expected - got))) if expected.size else 0.0
    want, have = int(expected.argmax()), int(got.argmax())
    tie = bool(want != have and abs(float(got[want]) - float(got[have])) <= tol)
    reasons = []
    if want != have and not tie:
        reasons.append("top-1 differs")
    if diff > tol:
        reasons.append(f"logits differ by {diff:.4g} > {tol:.4g}")
    return {"passed": not reasons, "reason": "; ".join(reasons), "max_abs_diff": diff,
            "expected_top1": want, "got_top1": have, "tie": tie}


def run_selftest(bundle_path: str | Path, *, precisions: list[str] | None = None,
                 atol: float = FLOAT_ATOL, rtol: float = FLOAT_RTOL,
                 int8_steps: float = INT8_STEPS) -> dict[str, Any]:
    """Classify the golden images of ``bundle_path`` here and compare with the desktop."""
    bundle = load_bundle(bundle_path)
    golden = bundle.golden()
    if not golden or not golden.get("images"):
        raise SelftestError(f"{bundle.root}: the bundle has no golden images to self-test "
                            f"(convert it again with `henet-edge convert`)")
    wanted = precisions or bundle.precisions
    for p in wanted:
        if p not in PRECISIONS:
            raise SelftestError(f"unknown precision {p!r}; choose from {', '.join(PRECISIONS)}")
    runtime = find_runtime()
    labels = bundle.labels
    spec = bundle.preprocessing
    inputs: dict[str, np.ndarray] = {}
    for entry in golden["images"]:
        try:
            image = open_image(str(bundle.root / entry["file"]))
        except (OSError, ValueError) as exc:
            raise SelftestError(f"{bundle.root}: golden image {entry['file']}: "
                                f"{getattr(exc, 'strerror', None) or exc}") from None
        inputs[entry["file"]] = preprocess_image(image, spec)
    report: dict[str, Any] = {"bundle": str(bundle.root), "id": bundle.id,
                              "name": bundle.manifest.name,
                              "runtime": runtime.describe(), "precisions": {}}
    passed = True
    for precision in wanted:
        model = TFLiteModel(bundle.model_path(precision), num_threads=1, runtime=runtime)
        if list(model.input_shape) != list(bundle.manifest.input_shape):
            raise SelftestError(f"{model.path}: input shape {list(model.input_shape)}, but "
                                f"the manifest declares {bundle.manifest.input_shape}")
        rows = []
        for entry in golden["images"]:
            expected = entry.get(precision)
            if not expected:
                continue
            got = model(inputs[entry["file"]])
            exp = np.asarray(expected["logits"], dtype=np.float64)
            tol = tolerance(exp, model.output_quant.scale, atol=atol, rtol=rtol,
                            int8_steps=int8_steps)
            row = compare(exp, got, tol)
            row.update(
                file=entry["file"], label=entry.get("label"), tolerance=tol,
                expected={"top1": int(expected.get("top1", int(exp.argmax()))),
                          "label": _label(labels, int(exp.argmax())),
                          "logit": float(exp.max())},
                got={"top1": int(np.argmax(got)), "label": _label(labels, int(np.argmax(got))),
                     "logit": float(np.max(got)), "logits": [float(v) for v in got]})
            if int(expected.get("top1", row["expected_top1"])) != row["expected_top1"]:
                row["passed"] = False
                row["reason"] = "golden.json top1 disagrees with its own logits"
            rows.append(row)
        if not rows:
            raise SelftestError(f"{bundle.root}: golden.json has no {precision} results")
        ok = all(r["passed"] for r in rows)
        passed = passed and ok
        report["precisions"][precision] = {
            "passed": ok, "images": len(rows), "failed": sum(not r["passed"] for r in rows),
            "max_abs_diff": max((r["max_abs_diff"] or 0.0) for r in rows),
            "delegate": model.delegate, "results": rows}
    report["passed"] = passed
    return report


def _label(labels: list[str], index: int) -> str:
    return labels[index] if 0 <= index < len(labels) else str(index)


def format_selftest(report: dict[str, Any]) -> str:
    """``henet-edge selftest``'s text: which bundle and runtime, then :func:`format_report`."""
    runtime = report["runtime"]
    head = (f"self-test of {report['name']} {report['id'][:12]} with {runtime['name']} "
            f"{runtime['version']}:")
    return "\n".join([head, *("  " + line for line in format_report(report))])


def failure_line(row: dict[str, Any]) -> str:
    """One failing golden image: both predictions and why it failed."""
    exp, got = row["expected"], row["got"]
    return (f"{row['file']}: desktop {exp['label']} ({exp['logit']:.3f}), device "
            f"{got['label']} ({got['logit']:.3f}): {row['reason']}")


def format_report(report: dict[str, Any]) -> list[str]:
    """Human lines: one per precision, and one per failing image with both predictions."""
    lines = []
    for precision, part in report["precisions"].items():
        state = "passed" if part["passed"] else "FAILED"
        lines.append(f"{precision}: {state} ({part['images'] - part['failed']}/"
                     f"{part['images']} golden images, max |logit diff| "
                     f"{part['max_abs_diff']:.3g})")
        lines += [f"  {failure_line(row)}" for row in part["results"] if not row["passed"]]
    return lines
