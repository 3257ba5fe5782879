"""The quantization report card: Keras vs float TFLite vs int8 TFLite."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from henet_edge.device.metrics import classification_metrics
from henet_edge.device.runtime import TFLiteModel


@dataclass(frozen=True)
class Gates:
    min_agreement: float = 0.98  # int8 top-1 agreement with Keras
    max_drop: float = 1.0  # accuracy points, Keras -> int8


DEFAULT_GATES = Gates()


def tflite_logits(model: TFLiteModel, inputs: np.ndarray) -> np.ndarray:
    return np.stack([model(x) for x in inputs])


def concat_quantization(path: Path) -> list[dict]:
    """Scale and zero point of every CONCATENATION's inputs and output."""
    model = TFLiteModel(path, xnnpack=False)
    w = model.interpreter._interpreter
    details = {d["index"]: d for d in model.interpreter.get_tensor_details()}
    rows = []
    for i in range(w.NumNodes()):
        if w.NodeName(i) != "CONCATENATION":
            continue
        tensors = [("in", int(t)) for t in w.NodeInputs(i)] + \
                  [("out", int(t)) for t in w.NodeOutputs(i)]
        entries = []
        for role, t in tensors:
            scale, zero = details[t]["quantization"]
            entries.append({"role": role, "tensor": details[t]["name"], "scale": float(scale),
                            "zero_point": int(zero)})
        scales = {round(e["scale"], 12) for e in entries}
        out_scale = entries[-1]["scale"]
        coarser = [e["tensor"] for e in entries[:-1] if e["scale"] < out_scale * (1 - 1e-6)]
        rows.append({"node": i, "tensors": entries, "shared_scale": len(scales) == 1,
                     "branches_losing_resolution": coarser})
    return rows


def report_card(keras_logits: np.ndarray, float_logits: np.ndarray, int8_logits: np.ndarray,
                labels: np.ndarray, class_names: list[str], int8_path: Path,
                gates: Gates, data_note: str) -> dict:
    keras_pred = keras_logits.argmax(1)
    km = classification_metrics(keras_logits, labels, class_names)
    fm = classification_metrics(float_logits, labels, class_names)
    qm = classification_metrics(int8_logits, labels, class_names)
    agreement_f = float((float_logits.argmax(1) == keras_pred).mean())
    agreement_q = float((int8_logits.argmax(1) == keras_pred).mean())
    drop = 100 * (km["top1"] - qm["top1"])
    per_class_drop = {c: None if km["per_class"][c] is None
                      else 100 * (km["per_class"][c] - qm["per_class"][c]) for c in class_names}
    concats = concat_quantization(int8_path)
    failures = []
    if agreement_q < gates.min_agreement:
        failures.append(f"int8 top-1 agreement with Keras is {100 * agreement_q:.2f}% "
                        f"(gate: >= {100 * gates.min_agreement:.1f}%)")
    if drop > gates.max_drop:
        failures.append(f"int8 accuracy drop is {drop:.2f} points (gate: <= {gates.max_drop})")
    return {
        "data": data_note,
        "images": len(labels),
        "keras": {"top1": km["top1"], "top5": km["top5"], "per_class": km["per_class"]},
        "float32": {"top1": fm["top1"], "top1_agreement": agreement_f,
                    "max_abs_logit_diff": float(np.abs(float_logits - keras_logits).max())},
        "int8": {"top1": qm["top1"], "top5": qm["top5"], "top1_agreement": agreement_q,
                 "accuracy_drop_points": drop, "per_class_drop_points": per_class_drop,
                 "max_abs_logit_diff": float(np.abs(int8_logits - keras_logits).max())},
        "concatenations": concats,
        "gates": {"min_agreement": gates.min_agreement, "max_drop_points": gates.max_drop,
                  "passed": not failures, "failures": failures},
    }


def format_scores(manifest: dict, out: Path) -> str:
    """``convert``'s closing line: top-1 of Keras and both TFLite models, int8 agreement."""
    r = manifest["report"]
    return (f"top-1 on {r['images']} images: Keras {100 * r['keras_top1']:.2f}%, float32 "
            f"{100 * r['float32_top1']:.2f}%, int8 {100 * r['int8_top1']:.2f}% (agreement "
            f"{100 * r['int8_agreement']:.2f}%); report: {Path(out) / 'report.md'}")


def report_markdown(report: dict, audits: dict, sizes: dict) -> str:
    k, f, q = report["keras"], report["float32"], report["int8"]
    lines = [
        "# Quantization report card", "",
        f"Data: {report['data']} ({report['images']} images).", "",
        "| model | top-1 | top-1 agreement with Keras | max abs logit diff | size |",
        "|---|---|---|---|---|",
        f"| Keras | {100 * k['top1']:.2f} % | - | - | - |",
        f"| float32 TFLite | {100 * f['top1']:.2f} % | {100 * f['top1_agreement']:.2f} % | "
        f"{f['max_abs_logit_diff']:.2e} | {sizes['float32'] / 1024:.0f} KiB |",
        f"| int8 TFLite | {100 * q['top1']:.2f} % | {100 * q['top1_agreement']:.2f} % | "
        f"{q['max_abs_logit_diff']:.3f} | {sizes['int8'] / 1024:.0f} KiB |",
        "", f"Int8 accuracy drop: **{q['accuracy_drop_points']:.2f} points**.", "",
        "## Per-class accuracy drop (points, Keras -> int8)", "",
        "| class | Keras | drop |", "|---|---|---|",
    ]
    for c, d in q["per_class_drop_points"].items():
        lines.append(f"| {c} | no images | |" if d is None
                     else f"| {c} | {100 * k['per_class'][c]:.1f} % | {d:+.2f} |")
    lines += ["", "## Concatenations (int8)", "",
              "TFLite's int8 CONCATENATION needs one scale for all inputs and the output; a "
              "branch whose own scale is finer than the shared one loses resolution.", "",
              "| node | shared scale | output scale | branches losing resolution |",
              "|---|---|---|---|"]
    for c in report["concatenations"]:
        lines.append(f"| {c['node']} | {'yes' if c['shared_scale'] else 'no'} | "
                     f"{c['tensors'][-1]['scale']:.5f} | "
                     f"{', '.join(c['branches_losing_resolution']) or '-'} |")
    lines += ["", "## Op audit", ""]
    for precision, audit in audits.items():
        ops = ", ".join(f"{k} x{v}" for k, v in audit["ops"].items())
        lines.append(f"- {precision}: {ops}; XNNPACK partitions: {audit['delegate_partitions']}"
                     f", fully delegated: {'yes' if audit['fully_delegated'] else 'NO'}")
    g = report["gates"]
    lines += ["", "## Gates", "",
              f"int8 agreement >= {100 * g['min_agreement']:.1f} %, drop <= "
              f"{g['max_drop_points']} points: **{'passed' if g['passed'] else 'FAILED'}**"]
    lines += [f"- {f}" for f in g["failures"]]
    return "\n".join(lines) + "\n"
