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
    ops = Counter(name for name in model.op_names() if name != "DELEGATE")
    problems = []
    for name in sorted(ops):
        if name.startswith("Flex") or name in ("CUSTOM", "DELEGATE_FLEX"):
            problems.append(f"{name}: a Flex/SELECT_TF op; the device runtime cannot run it")
        if name in DYNAMIC_SHAPE_OPS:
            problems.append(f"{name}: a dynamic-shape op (export with a static batch of 1)")
    partitions, fully, outside = model.delegation()
    if not partitions:
        problems.append("no op runs in the XNNPACK delegate (is it disabled?)")
    elif not fully:
        problems.append(f"{partitions} XNNPACK partition(s); ops left outside the "
                        f"delegate: {', '.join(outside) or 'at the graph edges'}")
    return AuditResult(str(path), dict(sorted(ops.items())), partitions, fully, problems)
