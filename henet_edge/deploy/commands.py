"""What ``deploy``, ``rollback``, ``status`` and ``remote ...`` do, as library calls.

Each function takes a :class:`~henet_edge.deploy.fleet.FleetOptions` (which
devices, how to reach them), runs its work on every device through
:func:`~henet_edge.deploy.fleet.on_fleet` and returns one
:class:`~henet_edge.deploy.fleet.HostOutcome` per host. Checks that need no
device (the bundle's own hashes, the SSH config, the wheel) run first, so a
typo stops the command before any host is contacted. The CLI only parses
options, calls one of these and prints the outcomes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from henet_edge import UsageError

from .connection import Log
from .errors import DeployError
from .fleet import FleetOptions, HostOutcome, on_fleet
from .installer import InstallOptions

HostLog = Callable[[str, str], None]  # (host, line)


def _silent(_host: str, _line: str) -> None:
    pass


def bundle_to_deploy(bundle: str | Path | None) -> Path:
    """``bundle``, or the shipped default bundle; verified against its own hashes."""
    from henet_edge.device.bundle import MANIFEST, load_bundle
    from henet_edge.device.classify import DEFAULT_BUNDLE

    if bundle is None:
        if not (DEFAULT_BUNDLE / MANIFEST).is_file():
            raise UsageError("give the BUNDLE folder to deploy (made by `henet-edge "
                              "convert`); no default bundle is shipped")
        bundle = DEFAULT_BUNDLE
    load_bundle(bundle)  # a bundle failing its own hashes stops here, before any host
    return Path(bundle)


def deploy(bundle: str | Path | None, fleet: FleetOptions, options: InstallOptions, *,
           log: Log = print, host_log: HostLog = _silent) -> list[HostOutcome]:
    """Install the device side and ``bundle`` on every device (verified, self-tested, atomic).

    Without ``options.wheel`` a wheel of this source tree is built (cached).
    """
    from .hosts import load_ssh_config
    from .wheel import check_wheel, project_wheel

    path = bundle_to_deploy(bundle)
    if options.keep < 1:
        raise UsageError("--keep must be at least 1")
    if options.reserve_bytes < 0:
        raise UsageError("--reserve-mb must be 0 or more (it is free space the deploy leaves "
                         "on the device)")
    hosts = fleet.resolve_before_slow_work()  # no host, or one that does not resolve
    load_ssh_config(fleet.connect.ssh_config)  # a typo there: likewise
    options.wheel = check_wheel(options.wheel) if options.wheel else project_wheel(log=log)
    return on_fleet(fleet, lambda inst: inst.deploy(path).to_dict(), install_options=options,
                    log=host_log, hosts=hosts)


def rollback(fleet: FleetOptions, to: str | None = None, *,
             host_log: HostLog = _silent) -> list[HostOutcome]:
    """Switch every device's ``current`` back to the previous (or ``to``) version."""
    return on_fleet(fleet, lambda inst: inst.rollback(to), log=host_log)


def status(fleet: FleetOptions, *, verify: bool = False,
           host_log: HostLog = _silent) -> list[HostOutcome]:
    """Every device's installed versions, device side, last bench and service."""
    return on_fleet(fleet, lambda inst: inst.status(verify=verify), log=host_log)


def classify(fleet: FleetOptions, inputs: list[str], *, precision: str | None = None,
             top_k: int = 3, threads: int = 1, as_json: bool = False,
             out: HostLog = _silent, err: HostLog = _silent,
             host_log: HostLog = _silent) -> list[HostOutcome]:
    """Classify local images on every device; ``out``/``err`` get its output lines.

    A host whose device could not read an input fails with how many did.
    """
    from .remote import remote_classify

    def work(installer) -> dict[str, Any]:
        host = installer.name
        code = remote_classify(installer, list(inputs), precision=precision, top_k=top_k,
                               threads=threads, as_json=as_json,
                               out=lambda line: out(host, line),
                               err=lambda line: err(host, line))
        if code:
            raise DeployError(f"{host}: some inputs could not be classified (listed above)")
        return {"host": host}

    return on_fleet(fleet, work, log=host_log)


def bench(fleet: FleetOptions, bench_args: list[str], *, out_path: Path | None = None,
          err: HostLog = _silent, host_log: HostLog = _silent) -> list[HostOutcome]:
    """Run ``henet-edge bench BENCH_ARGS`` on every device; save each result here as JSON
    (with several, a ``--plot`` or ``--latencies`` file is kept per host)."""
    from .remote import remote_bench

    if fleet.several and out_path is not None:
        raise UsageError("--out names one file; with several hosts each result is saved as "
                          "bench-HOST-TIME.json")

    def work(installer) -> dict[str, Any]:
        host = installer.name
        result, path = remote_bench(installer, list(bench_args), out_path=out_path,
                                    per_host_files=fleet.several,
                                    err=lambda line: err(host, line))
        host_log(host, f"saved {path}")
        return {"host": host, "path": str(path), "result": result}

    return on_fleet(fleet, work, log=host_log)


def serve_tunnel(fleet: FleetOptions, port: int, *, local_port: int = 0,
                 on_open: Log = print, log: Log = print) -> None:
    """Forward a local port to the device's loopback ``port`` until the connection ends."""
    from .ssh import connect
    from .tunnel import Tunnel

    if len(fleet.hosts) != 1 or fleet.hosts_file is not None:
        raise UsageError("remote serve takes exactly one --host")
    if not 0 < port < 65536 or not 0 <= local_port < 65536:
        raise UsageError("--port and --local-port must be TCP ports (1-65535)")
    host = fleet.hosts[0]
    with connect(host, fleet.connect, log=log) as connection, \
            Tunnel(connection, port, local_port=local_port, log=log) as tunnel:
        on_open(f"open {tunnel.url}  (tunnel to {host}'s 127.0.0.1:{port}; Ctrl-C closes)")
        while connection.transport.is_active():
            time.sleep(0.5)
    raise DeployError(f"{host}: the SSH connection closed")
