"""Commands that reach devices over SSH: deploy, status, rollback, remote."""

from __future__ import annotations

from pathlib import Path

import click

from henet_edge import HenetEdgeError, UsageError
from henet_edge.deploy.fleet import DEFAULT_JOBS
from henet_edge.deploy.probe import DEFAULT_REMOTE_DIR, DEFAULT_REMOTE_PYTHON, DEFAULT_RESERVE_MB
from henet_edge.deploy.ssh import CONNECT_TIMEOUT
from henet_edge.deploy.versions import DEFAULT_KEEP
from henet_edge.device.serve.options import DEFAULT_PORT

from .base import TIMEOUT, TOP_K, _err, emit_json, main, user_errors
from .device import bench


def _ssh_options(fn):
    """Connection and device-layout options shared by deploy, rollback, status and remote."""
    options = [
        click.option("--host", "hosts", multiple=True, metavar="HOST",
                     help="[user@]host[:port] or an ~/.ssh/config alias; repeat for a fleet."),
        click.option("--hosts-file", type=click.Path(path_type=Path), default=None,
                     help="File with one host per line (# comments)."),
        click.option("--identity", "-i", "identities", multiple=True, metavar="KEYFILE",
                     help="SSH private key (unlocked, or loaded in ssh-agent). Repeatable."),
        click.option("--ssh-config", default=None, metavar="FILE",
                     help="SSH config file [~/.ssh/config]."),
        click.option("--known-hosts", default=None, metavar="FILE",
                     help="known_hosts file to check and record keys in [~/.ssh/known_hosts]."),
        click.option("--accept-new-host-key", is_flag=True,
                     help="Trust an unknown host's key and record it (OpenSSH accept-new); "
                          "a changed key is always refused."),
        click.option("--connect-timeout", type=TIMEOUT, default=CONNECT_TIMEOUT, show_default=True,
                     help="Seconds to wait for the TCP connection and SSH banner."),
        click.option("--remote-dir", default=DEFAULT_REMOTE_DIR, show_default=True,
                     help="State folder on the device."),
        click.option("--remote-python", default=DEFAULT_REMOTE_PYTHON, show_default=True,
                     help="The device's Python 3 (used to probe and to create the venv)."),
        click.option("--jobs", default=DEFAULT_JOBS, show_default=True,
                     help="Hosts worked on in parallel."),
        click.option("--verbose", is_flag=True, help="Show the SSH library's own log."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _fleet_options(conn: dict):
    """The devices and connection of the shared --host/--identity/... flags."""
    from henet_edge.deploy.fleet import FleetOptions
    from henet_edge.deploy.ssh import ConnectOptions

    return FleetOptions(
        hosts=list(conn["hosts"]), hosts_file=conn["hosts_file"],
        connect=ConnectOptions(
            ssh_config=conn["ssh_config"], identities=list(conn["identities"]),
            known_hosts=conn["known_hosts"], accept_new_host_key=conn["accept_new_host_key"],
            connect_timeout=conn["connect_timeout"], verbose=conn["verbose"]),
        remote_dir=conn["remote_dir"], remote_python=conn["remote_python"], jobs=conn["jobs"])


def _host_err(host: str, message: str) -> None:
    click.echo(f"[{host}] {message}", err=True)


def _finish_fleet(outcomes, as_json: bool, table=None, *, healthy: bool = True) -> None:
    """Print the outcomes as JSON or ``table()``; then fail the one way fleets fail.

    A single failed host shows only its error; with several, each failure is a
    ``HOST: FAILED: error`` line and the command ends with how many failed.
    """
    from henet_edge.deploy.fleet import failed, fleet_json, raise_for_failures

    if as_json:
        emit_json(fleet_json(outcomes, healthy=healthy))
    elif table is not None and not (len(outcomes) == 1 and failed(outcomes)):
        text = table()
        if text:  # nothing when every host failed and there is no table
            click.echo(text)
    raise_for_failures(outcomes, _err)


@main.command()
@click.argument("bundle", required=False, type=click.Path(path_type=Path))
@_ssh_options
@click.option("--wheel", type=click.Path(path_type=Path), default=None,
              help="Install this henet_edge wheel [built from this source tree, cached].")
@click.option("--wheelhouse", type=click.Path(path_type=Path), default=None,
              help="Upload the device's dependency wheels from DIR (offline devices); "
                   "default: the device installs them from its package index.")
@click.option("--keep", default=DEFAULT_KEEP, show_default=True,
              help="Bundle versions kept on the device.")
@click.option("--reserve-mb", default=DEFAULT_RESERVE_MB, show_default=True,
              help="Free space (MB) the deploy must leave on the device.")
@click.option("--no-selftest", is_flag=True,
              help="Switch without checking the golden images on the device (not advised).")
@click.option("--service", is_flag=True,
              help="Also run `henet-edge serve` on boot (a systemd unit on the device, "
                   "started after the self-test passed); a redeploy restarts it.")
@click.option("--service-camera", default=None, metavar="SOURCE",
              help="The service's --camera source (with --service).")
@click.option("--json", "as_json", is_flag=True, help="Print the per-host results as JSON.")
@user_errors
def deploy(bundle, wheel, wheelhouse, keep, reserve_mb, no_selftest, service, service_camera,
           as_json, **conn):
    """Install the device side and a bundle on a device over SSH, verified and atomic.

    \b
    Probes the device, installs henet-edge[device] into ~/.henet-edge/venv
    (once per version), uploads BUNDLE (default: the bundled default model)
    into ~/.henet-edge/bundles/<sha256>/, verifies every hash there, runs the
    golden-image self-test on the device, then switches `current` atomically.
    A failed self-test leaves the previous version current. Interrupting the
    deploy at any point leaves the previous version intact; re-run to finish.

    \b
    Examples:
      henet-edge deploy bundles/henet_r3 --host pi@pi.local
      henet-edge deploy bundles/henet_r3 --host pi1 --host pi2 --jobs 2
      henet-edge deploy bundles/henet_r3 --host pi.local --accept-new-host-key
      henet-edge deploy bundles/henet_r3 --host pi.local --service --service-camera auto
    """
    from henet_edge.deploy import commands
    from henet_edge.deploy.fleet import outcome_table
    from henet_edge.deploy.installer import MB, InstallOptions
    from henet_edge.deploy.report import DEPLOY_HEADERS, deploy_row

    if service_camera and not service:
        raise UsageError("--service-camera goes with --service")
    options = InstallOptions(wheel=wheel, wheelhouse=wheelhouse, keep=keep,
                             reserve_bytes=reserve_mb * MB, selftest=not no_selftest,
                             service=(["--camera", service_camera] if service_camera else [])
                             if service else None)
    outcomes = commands.deploy(bundle, _fleet_options(conn), options, log=_err,
                               host_log=_host_err)
    _finish_fleet(outcomes, as_json, lambda: outcome_table(outcomes, DEPLOY_HEADERS, deploy_row))


@main.command()
@_ssh_options
@click.option("--to", "to", default=None, metavar="VERSION",
              help="Installed version to switch to (id prefix or bundle name) [the previous].")
@click.option("--json", "as_json", is_flag=True)
@user_errors
def rollback(to, as_json, **conn):
    """Switch the device's `current` bundle back to the previous (or --to) version.

    The target is verified against its hashes and self-tested on the device
    before the atomic switch.
    """
    from henet_edge.deploy import commands
    from henet_edge.deploy.fleet import outcome_table
    from henet_edge.deploy.report import ROLLBACK_HEADERS, rollback_row

    outcomes = commands.rollback(_fleet_options(conn), to, host_log=_host_err)
    _finish_fleet(outcomes, as_json,
                  lambda: outcome_table(outcomes, ROLLBACK_HEADERS, rollback_row))


@main.command()
@_ssh_options
@click.option("--verify", is_flag=True, help="Re-check every installed bundle's hashes.")
@click.option("--json", "as_json", is_flag=True)
@user_errors
def status(verify, as_json, **conn):
    """Installed versions, the current one, the runtime and the last bench result.

    With --verify, exits 1 when a device's current version is damaged or dangling.
    """
    from henet_edge.deploy import commands
    from henet_edge.deploy.report import format_status, unhealthy

    outcomes = commands.status(_fleet_options(conn), verify=verify, host_log=_host_err)
    damaged = verify and unhealthy(outcomes)
    _finish_fleet(outcomes, as_json, lambda: "\n".join(
        format_status(o.result) for o in outcomes if o.ok), healthy=not damaged)
    if damaged:
        raise HenetEdgeError("the current version is damaged or dangling (WARNING above)")


@main.group()
def remote() -> None:
    """Run device commands on a deployed device: bench, classify, serve (a tunnel)."""


@remote.command("classify")
@click.argument("inputs", nargs=-1, required=True)
@_ssh_options
@click.option("--precision", type=click.Choice(["int8", "float32"]), default=None,
              help="Which model of the bundle [int8 if present].")
@click.option("--top-k", type=TOP_K, default=3, show_default=True)
@click.option("--threads", default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image.")
@user_errors
def remote_classify_command(inputs, precision, top_k, threads, as_json, **conn):
    """Upload images, classify them on the device, print results as `classify` does."""
    from henet_edge.deploy import commands

    fleet = _fleet_options(conn)

    def line(host: str, text: str, err: bool = False) -> None:
        click.echo(f"[{host}] {text}" if fleet.several else text, err=err)

    outcomes = commands.classify(fleet, list(inputs), precision=precision, top_k=top_k,
                                 threads=threads, as_json=as_json, out=line,
                                 err=lambda host, text: line(host, text, err=True),
                                 host_log=_host_err)
    _finish_fleet(outcomes, False)


@remote.command("serve")
@_ssh_options
@click.option("--port", default=DEFAULT_PORT, show_default=True,
              help="The device's loopback port that `henet-edge serve` listens on.")
@click.option("--local-port", default=0,
              help="Port on this machine's 127.0.0.1 [--port if free, else any].")
@user_errors
def remote_serve_command(port, local_port, **conn):
    """Open the device's serve page here, through an SSH tunnel (like `ssh -L`).

    \b
    127.0.0.1:LOCAL on this machine is forwarded over the verified SSH
    connection to 127.0.0.1:PORT on the device, so the device's port never has
    to be reachable from the network. Prints the URL to open; Ctrl-C closes.

    \b
    Example:
      henet-edge remote serve --host pi.local
    """
    from henet_edge.deploy import commands

    commands.serve_tunnel(_fleet_options(conn), port, local_port=local_port, on_open=click.echo,
                          log=_err)


def _check_bench_args(bench_args: tuple[str, ...]) -> None:
    """Parse and check `bench`'s options here, before any SSH work, as the device will."""
    from henet_edge.device.bench import (
        BenchOptions,
        check_histogram_target,
        check_latencies_target,
    )

    with bench.make_context("henet-edge remote bench", list(bench_args)) as ctx:
        p = ctx.params
        BenchOptions.for_protocol(p["protocol"], runs=p["runs"], repeats=p["repeats"],
                                  warmup=p["warmup"], threads=p["threads"],
                                  precision=p["precision"]).validate()
        if p["plot_path"] is not None:  # drawn here, from the device's latencies
            check_histogram_target(p["plot_path"].expanduser())
        if p["latencies_path"] is not None:  # fetched here
            check_latencies_target(p["latencies_path"].expanduser())


@remote.command("bench", context_settings={"ignore_unknown_options": True,
                                          "allow_extra_args": True})
@_ssh_options
@click.option("--out", "out_path", type=click.Path(path_type=Path), default=None,
              help="Local JSON file for the result [bench-HOST-TIME.json].")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.argument("bench_args", nargs=-1, type=click.UNPROCESSED)
@user_errors
def remote_bench_command(out_path, as_json, bench_args, **conn):
    """Run `henet-edge bench` on the device; stream its progress, save the result here.

    \b
    Every other option is passed to `bench` on the device (see
    `henet-edge bench --help`); MODELS are paths on the device (default: its
    current bundle). --image uploads a local image; --plot draws the histogram
    here (the device needs no matplotlib); --latencies fetches every pass's latency.

    \b
    Example:
      henet-edge remote bench --host pi.local --precision all --core 3
    """
    from henet_edge.deploy import commands
    from henet_edge.device.bench import format_result

    _check_bench_args(bench_args)
    fleet = _fleet_options(conn)
    outcomes = commands.bench(fleet, list(bench_args), out_path=out_path,
                              err=lambda _host, text: _err(text), host_log=_host_err)
    _finish_fleet(outcomes, as_json, lambda: "\n".join(
        (f"== {o.host}\n" if fleet.several else "") + format_result(o.result["result"])
        for o in outcomes if o.ok and "result" in o.result))
