"""``henet-edge remote classify`` and ``remote bench``: run the device side on the device.

Images are uploaded into the device's ``tmp/`` (and removed afterwards), the
installed ``henet-edge`` runs there with its ``current`` bundle, and its output
streams back with the device's paths replaced by the local ones, so it reads
exactly like a local ``henet-edge classify``. A bench result is saved locally
as JSON (with the device's environment record and which host and bundle it
came from) and on the device as ``last-bench.json`` for ``henet-edge status``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Any

from henet_edge.device import bench as device_bench
from henet_edge.device.inputs import iter_inputs, printable, refuse_empty, regular_size
from henet_edge.storage import utc_timestamp, write_text_atomic

from .connection import Log
from .errors import DeployError
from .installer import CURRENT, LAST_BENCH, Installer


class LineSink:
    """Collect output chunks and hand complete lines (path-mapped) to ``emit``; lines in
    ``hidden`` (as the device wrote them) are dropped."""

    def __init__(self, emit: Log, mapping: dict[str, str]):
        self.emit = emit
        self.mapping = sorted(mapping.items(), key=lambda kv: -len(kv[0]))
        self.hidden: set[str] = set()
        self.buffer = b""

    def map(self, text: str) -> str:
        for remote, local in self.mapping:
            text = text.replace(remote, local)
        return text

    def _line(self, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace")
        if text not in self.hidden:
            self.emit(self.map(text))

    def __call__(self, chunk: bytes) -> None:
        self.buffer += chunk
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            self._line(line)

    def flush(self) -> None:
        if self.buffer:
            self._line(self.buffer)
            self.buffer = b""


def _require_install(installer: Installer, state: dict[str, Any]) -> None:
    host = installer.name
    if not state.get("current"):
        raise DeployError(f"{host}: no bundle is deployed there; run `henet-edge deploy "
                          f"--host {host}` first")
    if not state.get("venv") and not installer.options.device_python:
        raise DeployError(f"{host}: the device side is not installed; run `henet-edge deploy "
                          f"--host {host}` first")


def local_images(inputs: list[str]) -> tuple[list[Path], list[str]]:
    """Image files named or found in folders (the same walk as ``classify``), and error
    lines for inputs that are missing, not regular files or in a folder loop."""
    found: list[Path] = []
    errors: list[str] = []
    for path, problem in iter_inputs(inputs):
        if problem is None:
            try:
                regular_size(path)
            except (OSError, ValueError) as exc:
                problem = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        if problem is None:
            found.append(path)
        else:
            errors.append(f"{printable(path)}: error: {problem}")
    return found, errors


def remote_classify(installer: Installer, inputs: list[str], *, precision: str | None = None,
                    top_k: int = 3, threads: int = 1, as_json: bool = False,
                    out: Log = print, err: Log = print) -> int:
    """Classify local images on the device; returns the exit code (1 if any failed)."""
    refuse_empty(inputs, "INPUTS")
    state = installer.status()
    _require_install(installer, state)
    images, errors = local_images(inputs)
    for line in errors:
        err(line)
    if not images:
        raise DeployError("no images to classify")
    session = installer.session
    with session.scratch("classify") as stage:
        pairs = [(p, f"{stage}/{i:04d}/{p.name}") for i, p in enumerate(images)]
        mapping = {remote: str(local) for local, remote in pairs}
        args = ["classify", *(remote for _, remote in pairs), "--model",
                session.path(CURRENT), "--top-k", str(top_k), "--threads", str(threads)]
        if precision:
            args += ["--precision", precision]
        if as_json:
            args.append("--json")
        stdout, stderr = LineSink(out, mapping), LineSink(err, mapping)
        session.upload(pairs, "images")
        result = session.connection.run(installer.henet_command(args), stdout_sink=stdout,
                                        stderr_sink=stderr, timeout=session.timeout)
        stdout.flush()
        stderr.flush()
    return 1 if errors or not result.ok else 0


def _take_option(args: list[str], name: str) -> tuple[list[str], str | None]:
    """Remove ``--name VALUE`` / ``--name=VALUE`` from ``args``; return the value."""
    rest, value, i = [], None, 0
    while i < len(args):
        arg = args[i]
        if arg == name:
            if i + 1 >= len(args):
                raise DeployError(f"{name} needs a value")
            value, i = args[i + 1], i + 2
            continue
        if arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return rest, value


def _file_name_part(host: str) -> str:
    """``host`` as part of a file name; where characters had to be replaced, a short hash
    of the whole keeps apart hosts that read alike (``pi@a:22`` and ``pi_a_22``)."""
    part = re.sub(r"[^A-Za-z0-9_.-]+", "_", host).strip("_") or "device"
    if part == host:
        return part
    return f"{part}_{hashlib.sha256(host.encode()).hexdigest()[:6]}"


def default_bench_path(host: str) -> Path:
    return Path(f"bench-{_file_name_part(host)}-{time.strftime('%Y%m%d-%H%M%S')}.json")


def _per_host(path: Path, host: str, per_host: bool) -> Path:
    return path.with_name(f"{path.stem}-{_file_name_part(host)}{path.suffix}") if per_host else path


def _fetch_latencies(session, remote: str, local: Path | None,
                     echo: Log) -> dict[str, list[int]]:
    """Fetch the device's latencies file and check it; with ``local``, keep it there (its
    folder made, a file already there replaced only by a sound one)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="henet-edge-bench-") as scratch:
        fetched = Path(scratch) / "latencies.json"
        session.connection.get(remote, fetched)
        try:
            latencies = device_bench.read_latencies(fetched)
        except device_bench.BenchError as exc:
            raise DeployError(f"{session.name}: the device's {exc}") from None
        if local is not None:
            local.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(local, fetched.read_text(encoding="utf-8"))
            echo(f"wrote {local}")
    return latencies


def remote_bench(installer: Installer, bench_args: list[str], *, out_path: Path | None = None,
                 per_host_files: bool = False, err: Log = print) -> tuple[dict[str, Any], Path]:
    """Run ``henet-edge bench BENCH_ARGS --json`` on the device; save its result locally.

    ``--image`` names a local file (uploaded). ``--plot`` names a local PNG, drawn here
    from the device's latencies (so the device needs no matplotlib), and ``--latencies``
    a local JSON file of them; with ``per_host_files`` each is ``NAME-HOST.SUFFIX``, so
    that hosts benched together keep one each. Model arguments are paths on the device
    (default: its current bundle).
    """
    args = [a for a in bench_args if a != "--json"]
    args, image = _take_option(args, "--image")
    args, plot = _take_option(args, "--plot")
    args, latencies = _take_option(args, "--latencies")
    # Before any SSH work: a file that cannot land here would waste the timing.
    plot_file = (_per_host(device_bench.check_histogram_target(os.path.expanduser(plot)),
                           installer.name, per_host_files) if plot else None)
    latencies_file = (_per_host(device_bench.check_latencies_target(Path(latencies).expanduser()),
                                installer.name, per_host_files) if latencies else None)
    state = installer.status()
    _require_install(installer, state)
    session = installer.session
    mapping: dict[str, str] = {}
    stderr = LineSink(err, mapping)
    with session.scratch("bench") as stage:
        if image:
            local = Path(image).expanduser()
            if not local.is_file():
                raise DeployError(f"--image {image}: no such file")
            remote = f"{stage}/{local.name}"
            session.upload([(local, remote)], "image")
            args += ["--image", remote]
            mapping[remote] = str(local)
        remote_latencies = f"{stage}/latencies.json"
        if plot_file or latencies_file:
            args += ["--latencies", remote_latencies]
            stderr.hidden.add(f"wrote {remote_latencies}")  # said here once it has landed
        stderr.mapping = sorted(mapping.items(), key=lambda kv: -len(kv[0]))
        result = session.connection.run(installer.henet_command(["bench", *args, "--json"]),
                                        stderr_sink=stderr, timeout=session.timeout)
        stderr.flush()
        if not result.ok:
            last = stderr.map(result.last_line())
            if "No such option" in last and "--latencies" in last:
                last += (" (the device's henet-edge predates --latencies, which --plot "
                         "uses: deploy again to update it)")
            raise DeployError(f"{installer.name}: bench failed on the device: {last}")
        try:
            data = json.loads(result.out[result.out.index("{"):])
        except ValueError:
            raise DeployError(f"{installer.name}: bench gave no JSON result") from None
        if plot_file or latencies_file:
            per_model = _fetch_latencies(session, remote_latencies, latencies_file, err)
        if plot_file:
            run = device_bench.BenchRun(data, per_model)
            err(f"wrote {device_bench.plot_histogram(run, plot_file)}")
    current = next((b for b in state["bundles"] if b["id"] == state["current"]), {})
    data["remote"] = {"host": installer.name, "bundle": state["current"],
                      "bundle_name": current.get("name"), "args": bench_args,
                      "time": utc_timestamp(),
                      "device": state.get("device")}
    path = Path(out_path) if out_path else default_bench_path(installer.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=str))
    session.write_file(session.path(LAST_BENCH), json.dumps(data, default=str).encode())
    return data, path
