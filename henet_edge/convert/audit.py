"""Op audit of a converted model: op list, forbidden ops, XNNPACK delegation.

Runs the model in the device runtime (LiteRT), never in TensorFlow.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from henet_edge.device.runtime import TFLiteModel

# Ops that only appear with a dynamic batch; they knock reshapes out of XNNPACK.
DYNAMIC_SHAPE_OPS = {"SHAPE", "STRIDED_SLICE", "PACK", "BROADCAST_TO", "FILL"}


@dataclass
class AuditResult:
    path: str
    ops: dict[str, int]
    delegate_partitions: int
    fully_delegated: bool
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def audit_model(path: str | Path) -> AuditResult:
    """Audit one ``.tflite`` file; ``problems`` says which op fails and why."""
    model = TFLiteModel(path, num_threads=1, xnnpack=True)
    w = model.interpreter._interpreter
    nodes = [(w.NodeName(i), list(w.NodeInputs(i)), list(w.NodeOutputs(i)))
             for i in range(w.NumNodes())]
    original = [n for n in nodes if n[0] != "DELEGATE"]
    delegates = [n for n in nodes if n[0] == "DELEGATE"]
    ops = Counter(name for name, _, _ in original)
    problems = []
    for name in sorted(ops):
        if name.startswith("Flex") or name in ("CUSTOM", "DELEGATE_FLEX"):
            problems.append(f"{name}: a Flex/SELECT_TF op; the device runtime cannot run it")
        if name in DYNAMIC_SHAPE_OPS:
            problems.append(f"{name}: a dynamic-shape op (export with a static batch of 1)")
    produced = {t: name for name, _, outs in original for t in outs}
    model_inputs = {int(i) for i in w.InputIndices()}
    model_outputs = {int(i) for i in w.OutputIndices()}
    fully = False
    if not delegates:
        problems.append("no op runs in the XNNPACK delegate (is it disabled?)")
    else:
        boundary_in = {int(t) for _, ins, _ in delegates for t in ins
                       if int(t) in produced and int(t) not in model_inputs}
        outs = {int(t) for _, _, o in delegates for t in o}
        fully = len(delegates) == 1 and not boundary_in and outs == model_outputs
        if not fully:
            outside = sorted({produced[t] for t in boundary_in}
                             | {name for name, ins, _ in original
                                if {int(t) for t in ins} & (outs - model_outputs)})
            problems.append(f"{len(delegates)} XNNPACK partition(s); ops left outside the "
                            f"delegate: {', '.join(outside) or 'at the graph edges'}")
    return AuditResult(str(path), dict(sorted(ops.items())), len(delegates), fully, problems)
