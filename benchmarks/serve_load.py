"""Load test for `henet-edge serve`: N concurrent loopback clients, bounded requests.

Starts the real server (uvicorn) on a free 127.0.0.1 port in this process,
then prints throughput, p50/p99 latency, error counts and the server's RSS
at start and end.

    python benchmarks/serve_load.py --model BUNDLE [--clients 8] [--requests 10000]
"""

from __future__ import annotations

import argparse
import http.client
import io
import resource
import socket
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import uvicorn
from PIL import Image

from henet_edge.device.classify import Classifier
from henet_edge.device.serve.app import create_app


def rss_mb() -> float:
    """Current resident set size in MB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="bundle folder")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--max-seconds", type=float, default=300.0, help="stop after this long")
    args = ap.parse_args()

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(Classifier(args.model), queue_size=64),
                                           log_level="warning", lifespan="off"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(buf, "JPEG")
    body = buf.getvalue()
    deadline = time.monotonic() + args.max_seconds
    per_client = args.requests // args.clients

    def client(_: int) -> tuple[list[float], dict[int, int]]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        lat, errors = [], {}
        for _ in range(per_client):
            if time.monotonic() > deadline:
                break
            t0 = time.perf_counter()
            conn.request("POST", "/api/classify", body, {"Content-Type": "image/jpeg"})
            resp = conn.getresponse()
            resp.read()
            lat.append((time.perf_counter() - t0) * 1000)
            if resp.status != 200:
                errors[resp.status] = errors.get(resp.status, 0) + 1
        conn.close()
        return lat, errors

    rss0 = rss_mb()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.clients) as pool:
        results = list(pool.map(client, range(args.clients)))
    wall = time.perf_counter() - t0
    rss1 = rss_mb()
    server.should_exit = True
    lat = sorted(x for r in results for x in r[0])
    errors: dict[int, int] = {}
    for _, e in results:
        for k, v in e.items():
            errors[k] = errors.get(k, 0) + v
    print(f"requests {len(lat)} clients {args.clients} wall {wall:.1f} s")
    print(f"throughput {len(lat) / wall:.1f} classifications/s")
    p99 = lat[int(0.99 * (len(lat) - 1))]
    print(f"latency p50 {statistics.median(lat):.2f} ms p99 {p99:.2f} ms")
    print(f"errors {sum(errors.values())} {errors}")
    print(f"server RSS start {rss0:.1f} MB end {rss1:.1f} MB growth {rss1 - rss0:.1f} MB")


if __name__ == "__main__":
    main()
