"""One small interface over the TFLite interpreters a device may have.

Preference order: ``ai_edge_litert`` (LiteRT), then ``tflite_runtime`` (its
2.14 wheels need numpy<2 and run int8 models on slow reference kernels), then
``tensorflow.lite`` on a desktop that has neither. XNNPACK is LiteRT's default
CPU delegate; it is what runs grouped convolutions fast.
"""

from __future__ import annotations

import functools
import importlib
import os
import re
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from henet_edge import HenetEdgeError

RUNTIMES = ("ai_edge_litert", "tflite_runtime", "tensorflow")
MAX_THREADS = 64  # interpreter threads; more than any Pi (or most desktops) has cores


class RuntimeMissing(HenetEdgeError, RuntimeError):
    """No TFLite interpreter is importable."""


class ModelError(HenetEdgeError, ValueError):
    """A model file that is missing, unloadable or unsuitable for its use."""


@dataclass(frozen=True)
class RuntimeInfo:
    name: str
    version: str
    module: Any

    def describe(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version}


def _load(name: str) -> RuntimeInfo | None:
    try:
        if name == "ai_edge_litert":
            module = importlib.import_module("ai_edge_litert.interpreter")
            version = getattr(importlib.import_module("ai_edge_litert"), "__version__", "?")
        elif name == "tflite_runtime":
            module = importlib.import_module("tflite_runtime.interpreter")
            version = getattr(importlib.import_module("tflite_runtime"), "__version__", "?")
        else:
            tf = importlib.import_module("tensorflow")
            module, version = tf.lite, tf.__version__
    except Exception:  # a broken install counts as missing
        return None
    return RuntimeInfo(name, str(version), module)


def find_runtime(prefer: str | None = None) -> RuntimeInfo:
    """The first importable runtime (or ``prefer`` if given and importable)."""
    order = [prefer] if prefer else list(RUNTIMES)
    for name in order:
        if name not in RUNTIMES:
            raise RuntimeMissing(f"unknown runtime {name!r}; choose {', '.join(RUNTIMES)}")
        info = _load(name)
        if info is not None:
            if info.name == "tflite_runtime":
                warnings.warn("using tflite_runtime: its last wheels (2.14) need numpy<2 and "
                              "run int8 models on slow reference kernels; "
                              "`pip install ai-edge-litert` is faster", stacklevel=2)
            return info
    raise RuntimeMissing("no TFLite runtime found: `pip install ai-edge-litert` "
                         "(or `pip install 'henet-edge[device]'`)")


@dataclass(frozen=True)
class Quant:
    dtype: np.dtype
    scale: float
    zero_point: int

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0


def _quant(detail: dict[str, Any]) -> Quant:
    scale, zero = detail.get("quantization", (0.0, 0))
    return Quant(np.dtype(detail["dtype"]), float(scale), int(zero))


# What LiteRT's C++ code prints on file descriptor 2 each time it builds an interpreter.
_BANNER = re.compile(rb"^INFO: Created TensorFlow Lite (XNNPACK )?delegate for CPU\.\r?$")
_STDERR_SWAP = threading.Lock()  # descriptor 2 is the process's: one swap at a time


@contextmanager
def without_delegate_banner() -> Iterator[None]:
    """Drop the runtime's "Created ... delegate" INFO line; pass on everything else.

    The runtime writes straight to file descriptor 2, so for the duration that
    descriptor points at a temporary file, whose lines (warnings, errors, and
    whatever another thread printed meanwhile) are written to the real stderr
    afterwards, all but the banner.
    """
    with _STDERR_SWAP:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):  # no usable descriptor 2: nothing to filter
            yield
            return
        with _caught_stderr(saved):
            yield


@contextmanager
def _caught_stderr(saved: int) -> Iterator[None]:
    """Point descriptor 2 at a temporary file; put ``saved`` back and relay the lines."""
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = [line for line in caught.read().splitlines(keepends=True)
                    if not _BANNER.match(line.rstrip(b"\n"))]
            if kept:
                os.write(2, b"".join(kept))


class TFLiteModel:
    """A loaded ``.tflite`` with float-in, float-out helpers around raw invokes."""

    def __init__(self, path: str | Path, *, num_threads: int = 1, xnnpack: bool = True,
                 runtime: RuntimeInfo | None = None):
        self.path = Path(path)
        if not 1 <= num_threads <= MAX_THREADS:
            raise ModelError(f"--threads must be 1 to {MAX_THREADS}, got {num_threads}")
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such model file")
        self.runtime = runtime or find_runtime()
        self.xnnpack = xnnpack
        kwargs: dict[str, Any] = {"model_path": str(self.path), "num_threads": num_threads}
        if not xnnpack:
            module = self.runtime.module  # tf.lite keeps it under tf.lite.experimental
            resolver = getattr(module, "OpResolverType", None) or getattr(
                getattr(module, "experimental", None), "OpResolverType", None)
            if resolver is None:
                raise RuntimeMissing(f"{self.runtime.name} cannot disable its default delegates")
            kwargs["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            with without_delegate_banner():
                t0 = time.perf_counter()
                self.interpreter = self.runtime.module.Interpreter(**kwargs)
                self.interpreter.allocate_tensors()
                self.load_seconds = time.perf_counter() - t0  # the runtime's own time
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{self.path}: not a loadable TFLite model ({exc}); make one "
                             "with `henet-edge convert`") from exc
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(f"{self.path}: expected one input and one output tensor")
        self._in, self._out = inputs[0], outputs[0]
        self.input_shape = tuple(int(d) for d in self._in["shape"])
        self.output_size = int(np.prod(self._out["shape"]))
        self.input_quant, self.output_quant = _quant(self._in), _quant(self._out)

    def delegate_nodes(self) -> int:
        """How many delegate kernels the interpreter's graph holds (0: none applied).

        A delegate that takes over part of the graph adds a ``DELEGATE`` node
        for each partition it runs; one node usually means fully delegated.
        """
        try:
            return self.op_names().count("DELEGATE")
        except Exception:  # private API; absent on some runtimes
            return -1

    def delegation(self) -> tuple[int, bool, list[str]]:
        """The delegate's partitions, whether one of them runs the whole graph (it reads
        only the model's input and constants, and writes the model's output), and the
        ops left outside it (built-in kernels)."""
        w = self.interpreter._interpreter  # private API, as op_names
        nodes = [(w.NodeName(i), [int(t) for t in w.NodeInputs(i)],
                  [int(t) for t in w.NodeOutputs(i)]) for i in range(w.NumNodes())]
        original = [n for n in nodes if n[0] != "DELEGATE"]
        delegates = [n for n in nodes if n[0] == "DELEGATE"]
        produced = {t: name for name, _, outs in original for t in outs}
        model_inputs = {int(i) for i in w.InputIndices()}
        model_outputs = {int(i) for i in w.OutputIndices()}
        boundary_in = {t for _, ins, _ in delegates for t in ins
                       if t in produced and t not in model_inputs}
        outs = {t for _, _, o in delegates for t in o}
        fully = len(delegates) == 1 and not boundary_in and outs == model_outputs
        outside = [] if fully or not delegates else sorted(
            {produced[t] for t in boundary_in}
            | {name for name, ins, _ in original if set(ins) & (outs - model_outputs)})
        return len(delegates), fully, outside

    @property
    def delegate(self) -> str:
        """The delegate that actually runs, as far as the interpreter shows it."""
        return self._delegate_report[1]

    @property
    def delegate_kind(self) -> str:
        """``full``, ``partial`` (ops left on slow built-in kernels), ``none`` or
        ``unverified`` (a runtime that does not show its graph): for checks and warnings."""
        return self._delegate_report[0]

    @functools.cached_property
    def _delegate_report(self) -> tuple[str, str]:
        """(kind, text), worked out once: the graph does not change after loading."""
        if not self.xnnpack:
            return "none", "none (built-in kernels)"
        nodes = self.delegate_nodes()
        if nodes > 0:
            try:
                _, fully, outside = self.delegation()
            except Exception:  # private API; absent on some runtimes
                return ("full", "XNNPACK") if nodes == 1 else (
                    "partial", f"XNNPACK ({nodes} partitions)")
            if fully:
                return "full", "XNNPACK"
            return "partial", (
                f"XNNPACK, partial ({nodes} partition{'s' if nodes > 1 else ''}; on "
                f"built-in kernels: {', '.join(outside) or 'ops at the graph edges'})")
        if nodes == 0:
            return "none", "none (XNNPACK requested but not applied)"
        return "unverified", "XNNPACK (requested; not verifiable with this runtime)"

    def describe(self) -> dict[str, Any]:
        return {"runtime": self.runtime.name, "runtime_version": self.runtime.version,
                "delegate": self.delegate, "input_dtype": str(self.input_quant.dtype),
                "input_shape": list(self.input_shape)}

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """Float model input ``(H, W, C)`` or ``(1, H, W, C)`` -> the tensor's dtype."""
        x = np.asarray(x, np.float32).reshape(self.input_shape)
        q = self.input_quant
        if not q.quantized:
            return x.astype(q.dtype)
        info = np.iinfo(q.dtype)
        return np.clip(np.round(x / q.scale) + q.zero_point, info.min, info.max).astype(q.dtype)

    def set_input(self, raw: np.ndarray) -> None:
        self.interpreter.set_tensor(self._in["index"], raw)

    def invoke(self) -> None:
        self.interpreter.invoke()

    def raw_output(self) -> np.ndarray:
        return self.interpreter.get_tensor(self._out["index"]).reshape(-1)

    def output(self) -> np.ndarray:
        """Float logits, dequantised if the output tensor is quantised."""
        raw = self.raw_output()
        q = self.output_quant
        if not q.quantized:
            return raw.astype(np.float32)
        return ((raw.astype(np.float32) - q.zero_point) * q.scale).astype(np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.set_input(self.quantize_input(x))
        self.invoke()
        return self.output()

    @property
    def quantized(self) -> bool:
        """Whether the graph computes in int8 (its tensors carry int8 scales), even with a
        float32 input and output (``convert --io float32``)."""
        return self.input_quant.quantized or any(
            t["dtype"] in (np.int8, np.uint8) and t["quantization"][0] != 0.0
            for t in self.interpreter.get_tensor_details())

    def op_names(self) -> list[str]:
        """Op names in execution order (as the model file lists them)."""
        details = self.interpreter._get_ops_details()  # the only op-listing API
        return [d["op_name"] for d in details]


def open_model(path: str | Path, **kwargs: Any) -> TFLiteModel:
    """:class:`TFLiteModel`, with a missing or unloadable file as a :class:`ModelError`."""
    try:
        return TFLiteModel(path, **kwargs)
    except (FileNotFoundError, ValueError) as exc:
        if isinstance(exc, HenetEdgeError):
            raise
        raise ModelError(str(exc)) from None


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Probabilities along ``axis`` (the last: one image's logits, or a batch's rows)."""
    e = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)
