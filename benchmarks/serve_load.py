"""Load test for `henet-edge serve`: N concurrent loopback clients, bounded requests.

Starts the real server (uvicorn + the service's Starlette app) in its own
process on a free 127.0.0.1 port, drives it from N client threads in this
process (one keep-alive connection each, the same JPEG every time), and prints
throughput and p50/p99 latency of the classified requests, the count of refused ones
(503: the queue was full) and the server process's RSS at start (after a warm-up) and
end. ``--workers`` interpreters serve side by side;
``--http`` picks uvicorn's HTTP parser (h11 is pure Python; httptools is
compiled, used by "auto" when installed).

    python benchmarks/serve_load.py --model BUNDLE [--clients 8] [--requests 10000]
        [--workers 1] [--http auto|h11|httptools] [--queue 16]
"""

from __future__ import annotations

import http.client
import io
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from henet_edge import HenetEdgeError, UsageError  # noqa: E402
from henet_edge.cli.base import script_help, user_errors  # noqa: E402
from henet_edge.device.serve.app import QUEUE_SIZE  # noqa: E402

SERVER = """
import sys, uvicorn
from henet_edge.device.classify import Classifier
from henet_edge.device.serve.app import create_app
model, port, workers, http = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
members = Classifier(model) if workers == 1 else [Classifier(model) for _ in range(workers)]
app = create_app(members, queue_size=int(sys.argv[5]))
uvicorn.run(app, host="127.0.0.1", port=port, http=http, log_level="warning")
"""


def rss_mb(pid: int) -> float:
    """Resident set size of process ``pid`` in MB (Linux /proc)."""
    with open(f"/proc/{pid}/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 1e6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_log(log) -> str:
    """The last line the server wrote to stderr, or a note that it wrote none."""
    log.seek(0)
    said = [line for line in log.read().decode(errors="replace").splitlines() if line.strip()]
    return said[-1].strip() if said else "(empty)"


def wait_ready(port: int, proc: subprocess.Popen, log, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise HenetEdgeError(f"the server exited ({proc.returncode}): {server_log(log)}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                conn.close()
                return
        except OSError:
            time.sleep(0.1)
    raise HenetEdgeError("the server did not start")


@click.command(help=script_help(__doc__))
@click.option("--model", type=click.Path(exists=True, file_okay=False, path_type=Path),
              required=True, help="Bundle folder the server classifies with.")
@click.option("--clients", type=click.IntRange(1), default=8, show_default=True,
              help="Concurrent client threads, one keep-alive connection each.")
@click.option("--requests", type=click.IntRange(1), default=10_000, show_default=True,
              help="Timed requests in all, shared evenly between the clients.")
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True,
              help="Interpreters in the server.")
@click.option("--http", "http_parser", type=click.Choice(["auto", "h11", "httptools"]),
              default="auto", show_default=True,
              help="uvicorn's HTTP parser (auto: httptools when installed, else h11).")
@click.option("--queue", type=click.IntRange(1), default=QUEUE_SIZE, show_default=True,
              help="Requests that may wait for a classifier; the next gets 503 (serve's "
                   "own limit by default).")
@click.option("--max-seconds", type=click.FloatRange(0, min_open=True), default=300.0,
              show_default=True, help="Seconds the warm-up, and then the timed requests, "
                                      "may each take before the clients stop.")
@user_errors
def main(model: Path, clients: int, requests: int, workers: int, http_parser: str,
         queue: int, max_seconds: float) -> None:
    if requests < clients:
        raise UsageError(f"--requests {requests} is fewer than --clients {clients}: "
                         "each client needs at least one request")
    port = free_port()
    with tempfile.TemporaryFile() as log:  # the server's stderr (a pipe could fill, stall it)
        proc = subprocess.Popen([sys.executable, "-c", SERVER, str(model), str(port),
                                 str(workers), http_parser, str(queue)],
                                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
                                stderr=log)
        try:
            wait_ready(port, proc, log)
            buf = io.BytesIO()
            rng = np.random.default_rng(0)
            Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(buf, "JPEG")
            body = buf.getvalue()
            per_client = requests // clients

            def client(count: int) -> tuple[list[float], dict[int, int]]:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                lat: list[float] = []
                errors: dict[int, int] = {}
                for _ in range(count):
                    if time.monotonic() > deadline:
                        break
                    t0 = time.perf_counter()
                    try:
                        conn.request("POST", "/api/classify", body,
                                     {"Content-Type": "image/jpeg"})
                        resp = conn.getresponse()
                        resp.read()
                    except OSError as exc:  # the server died or dropped the connection
                        raise HenetEdgeError(f"request failed: {exc}; the server's log: "
                                             f"{server_log(log)}") from None
                    if resp.status == 200:  # a refusal (503: queue full) is no classification
                        lat.append((time.perf_counter() - t0) * 1000)
                    else:
                        errors[resp.status] = errors.get(resp.status, 0) + 1
                conn.close()
                return lat, errors

            deadline = time.monotonic() + max_seconds
            with ThreadPoolExecutor(clients) as pool:  # warm-up: every thread, 20 each
                list(pool.map(client, [20] * clients))
            rss0 = rss_mb(proc.pid)
            deadline = time.monotonic() + max_seconds
            t0 = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                results = list(pool.map(client, [per_client] * clients))
            wall = time.perf_counter() - t0
            rss1 = rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(10)
    lat = [x for r in results for x in r[0]]
    if not lat:
        raise HenetEdgeError(f"no timed request was classified within --max-seconds "
                             f"{max_seconds:g}")
    errors: dict[int, int] = {}
    for _, e in results:
        for k, v in e.items():
            errors[k] = errors.get(k, 0) + v
    print(f"requests {len(lat)} clients {clients} workers {workers} "
          f"http {http_parser} wall {wall:.1f} s")
    print(f"throughput {len(lat) / wall:.1f} classifications/s (refused requests left out)")
    p50, p99 = np.percentile(lat, [50, 99])
    print(f"latency p50 {p50:.2f} ms p99 {p99:.2f} ms")
    print(f"errors {sum(errors.values())} {errors}")
    print(f"server RSS start {rss0:.1f} MB end {rss1:.1f} MB growth {rss1 - rss0:.1f} MB")


if __name__ == "__main__":
    main()
