"""Prometheus text-format counters for the service (no client library needed)."""

from __future__ import annotations

import threading
import time
from collections import Counter

BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


class Metrics:
    """Requests, errors by kind, invoke latency histogram, frames and uptime."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.buckets = [0] * len(BUCKETS_MS)
        self.invoke_count = 0
        self.invoke_sum_ms = 0.0
        self.frames = 0

    def request(self, path: str) -> None:
        with self.lock:
            self.requests[path] += 1

    def error(self, kind: str) -> None:
        with self.lock:
            self.errors[kind] += 1

    def invoke(self, ms: float) -> None:
        with self.lock:
            self.invoke_count += 1
            self.invoke_sum_ms += ms
            for i, le in enumerate(BUCKETS_MS):
                if ms <= le:
                    self.buckets[i] += 1

    def frame(self) -> None:
        with self.lock:
            self.frames += 1

    def render(self) -> str:
        """The metrics in Prometheus' text exposition format."""
        with self.lock:
            lines = ["# TYPE henet_requests_total counter"]
            lines += [f'henet_requests_total{{path="{p}"}} {n}'
                      for p, n in sorted(self.requests.items())]
            lines.append("# TYPE henet_errors_total counter")
            lines += [f'henet_errors_total{{kind="{k}"}} {n}'
                      for k, n in sorted(self.errors.items())]
            lines.append("# TYPE henet_invoke_ms histogram")
            lines += [f'henet_invoke_ms_bucket{{le="{le}"}} {n}'
                      for le, n in zip(BUCKETS_MS, self.buckets, strict=True)]
            lines.append(f'henet_invoke_ms_bucket{{le="+Inf"}} {self.invoke_count}')
            lines.append(f"henet_invoke_ms_sum {self.invoke_sum_ms:.3f}")
            lines.append(f"henet_invoke_ms_count {self.invoke_count}")
            lines.append("# TYPE henet_frames_total counter")
            lines.append(f"henet_frames_total {self.frames}")
            lines.append("# TYPE henet_uptime_seconds gauge")
            lines.append(f"henet_uptime_seconds {time.monotonic() - self.start:.3f}")
        return "\n".join(lines) + "\n"
