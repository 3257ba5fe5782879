"""The ``henet-edge`` command line: thin shells over library functions.

Nothing here imports TensorFlow at module import time; commands that need it
import it when they run, so ``henet-edge classify`` on a Pi starts fast.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click

from henet_edge import HenetEdgeError, UsageError, __version__, refuse_existing
from henet_edge.convert.lowering import DEFAULT_LOWERING, LOWERINGS
from henet_edge.henet_keras.registry import check_model_args, model_names, model_spec

MODEL_CHOICES = model_names()


def _quiet_tensorflow() -> None:
    from henet_edge.henet_keras.tf_env import prepare_tensorflow

    prepare_tensorflow()


def user_errors(fn):
    """The one way a command fails: a project error becomes one line on stderr.

    A :class:`~henet_edge.UsageError` (a command line that cannot work) exits 2
    with the usage, like click's own; every other
    :class:`~henet_edge.HenetEdgeError` exits 1; Ctrl-C exits 130. Command
    bodies raise these instead of calling ``sys.exit``.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UsageError as exc:
            raise click.UsageError(str(exc)) from None
        except HenetEdgeError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


def quiet_logs(fn=None, *, add_option: bool = True):
    """Hide TensorFlow's, the converter's and XNNPACK's own logs unless ``--verbose``.

    With ``add_option=False`` the command's existing ``--verbose`` decides.
    """
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            from henet_edge.henet_keras.tf_env import quiet_native_logs

            verbose = kwargs.pop("verbose") if add_option else kwargs.get("verbose", False)
            with quiet_native_logs(verbose):
                return fn(*args, **kwargs)

        if add_option:
            wrapper = click.option(
                "--verbose", is_flag=True,
                help="Show TensorFlow's, the converter's and XNNPACK's own logs.")(wrapper)
        return wrapper

    return decorate(fn) if fn is not None else decorate


def _err(message: str) -> None:
    """One line on stderr (progress, notes): stdout stays the result."""
    click.echo(message, err=True)


def emit_json(data) -> None:
    click.echo(json.dumps(data, indent=1, default=str))


COMMAND_GROUPS = (
    ("Start here", ("demo",)),
    ("Desktop (train and convert)", ("profile", "train", "evaluate", "calibrate", "convert",
                                     "compare")),
    ("Deploy (to devices over SSH)", ("deploy", "status", "rollback", "remote")),
    ("Device (on the Pi)", ("classify", "camera", "bench", "serve", "service", "doctor")),
)


class GroupedCommands(click.Group):
    """``--help`` lists every command under its group, with its whole summary line."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        listed = {name for _, names in COMMAND_GROUPS for name in names}
        groups = [(title, list(names)) for title, names in COMMAND_GROUPS]
        others = [n for n in self.list_commands(ctx) if n not in listed]
        if others:
            groups.append(("Other", others))
        for title, names in groups:
            rows = []
            for name in names:
                command = self.get_command(ctx, name)
                if command is not None and not command.hidden:
                    rows.append((name, command.get_short_help_str(limit=1000)))
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


@click.group(cls=GroupedCommands,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="henet-edge")
def main() -> None:
    """Train HENet, convert it to TFLite, and run it on a Raspberry Pi.

    Run `henet-edge COMMAND --help` for each command's options.
    """


# --------------------------------------------------------------------------- profile
@main.command()
@click.option("--model", "model_name", default="henet", show_default=True,
              help=f"Model family: {', '.join(model_names())}.")
@click.option("--repeat", type=click.IntRange(max=50), default=3, show_default=True,
              help="Stride-1 blocks per stage (at most 50).")
@click.option("--classes", type=click.IntRange(max=100_000), default=10, show_default=True)
@click.option("--input-size", type=click.IntRange(max=1024), default=31, show_default=True)
@click.option("--width", "width_multiplier", type=click.FloatRange(0.25, 8.0), default=1.0,
              show_default=True,
              help="Width multiplier (HENet only, 0.25 to 8); groups are re-derived per block.")
@click.option("--layers/--no-layers", "show_layers", default=True, show_default=True,
              help="Print the per-layer table.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@quiet_logs
@user_errors
def profile(model_name, repeat, classes, input_size, width_multiplier, show_layers, as_json):
    """Params and MACs per layer, real and in the paper's counting convention.

    \b
    Real: trainable params as built (grouped kernels, no conv bias, BN gamma
    and beta, FC; not BN's moving mean and variance, which `train`'s weight
    count includes) and multiply-accumulates of every conv and FC layer.
    Paper: convs counted as dense (groups ignored) + conv bias + 2 BN values
    per channel + FC; MACs with the first block of each stage counted with 2C
    inputs. This convention reproduces the paper's Table 3 to the unit.
    """
    model_spec(model_name)  # cheap checks, before TensorFlow
    check_model_args(repeat, classes, option_prefix="--")
    _quiet_tensorflow()
    from henet_edge.henet_keras.profile import format_profile, profile_family

    summary = profile_family(model_name, repeat=repeat, classes=classes, input_size=input_size,
                             width_multiplier=width_multiplier)
    if as_json:
        emit_json(summary)
    else:
        click.echo(format_profile(summary, show_layers=show_layers))


# ---- device commands (begin)
_MODEL_HELP = ("Bundle folder, or a .tflite with --labels. Default: the installed bundle "
               "($HENET_EDGE_HOME/current, else ~/.henet-edge/current), else the bundled "
               "default model.")


_SEED = click.IntRange(0, 2**32 - 1)  # numpy and TensorFlow both take this range


def _warn_loudly(message: str) -> None:
    click.secho(f"*** WARNING: {message} ***", fg="red", bold=True, err=True)


def _make_classifier(model, labels, precision, top_k, threads):
    from henet_edge.device.classify import Classifier

    classifier = Classifier(model, labels=labels, precision=precision, top_k=top_k,
                            num_threads=threads)
    if not classifier.model.delegate.startswith("XNNPACK"):
        _warn_loudly(f"delegate: {classifier.model.delegate}; inference will be slow")
    return classifier


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--model", default=None, help=_MODEL_HELP)
@click.option("--labels", default=None, help="Labels file (one per line) for a bare .tflite.")
@click.option("--precision", type=click.Choice(["int8", "float32"]), default=None,
              help="Which model of the bundle [int8 if present].")
@click.option("--top-k", default=3, show_default=True, help="Labels to show per image.")
@click.option("--threads", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Interpreter threads (1 to 64).")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per image (JSON Lines), errors included. A path that "
                   "is not valid UTF-8 has each bad byte as \\xNN and its exact bytes in "
                   "path_b64 (base64).")
@user_errors
def classify(inputs, model, labels, precision, top_k, threads, as_json):
    """Classify image files and folders (JPEG, PNG, BMP, WebP; folders are walked).

    \b
    Every image goes through the training preprocessing (EXIF orientation,
    any mode converted to RGB, resize, centre crop, normalise). A file that
    cannot be read gets an error line and the rest go on; the exit code is 1
    if any failed. Only regular files are read (FIFOs and devices are
    errors); folder loops are reported, not followed. Control characters in
    file names are shown escaped (\\n, \\x1b).

    \b
    Example:
      henet-edge classify photo.jpg holidays/ --top-k 5
    """
    from henet_edge.device.classify import classify_paths, format_result
    from henet_edge.device.inputs import refuse_empty

    refuse_empty(inputs, "INPUTS")
    classifier = _make_classifier(model, labels, precision, top_k, threads)
    made_by = classifier.made_by()  # on every JSON line: streams of several models differ
    if not as_json:
        info = classifier.describe()
        click.echo(f"model: {info.get('bundle_name') or info['model']} ({info['precision']}, "
                   f"{info['runtime']} {info['runtime_version']}, {info['delegate']})", err=True)
    total = failed = 0
    for result in classify_paths(classifier, inputs):
        total += 1
        failed += not result.ok
        if as_json:
            click.echo(json.dumps({**result.to_dict(), **made_by}))
        else:
            click.echo(format_result(result), err=not result.ok)
    if failed:
        raise HenetEdgeError(f"{failed} of {total} inputs failed")


@main.command()
@click.option("--model", default=None, help=_MODEL_HELP)
@click.option("--precision", type=click.Choice(["int8", "float32"]), default=None,
              help="Which model of the bundle [int8 if present].")
@click.option("--bind", default="127.0.0.1:8080", show_default=True,
              help="HOST:PORT to listen on; any non-loopback host requires a token.")
@click.option("--token", default=None, envvar="HENET_EDGE_TOKEN",
              help="Token every request must carry (Authorization: Bearer T or ?token=T); "
                   "generated and printed once when binding beyond loopback.")
@click.option("--threads", default=1, show_default=True, help="Interpreter threads.")
@click.option("--workers", default=1, show_default=True,
              help="Interpreters serving requests side by side (one model load each; 1 to 16).")
@click.option("--camera", default=None, metavar="SOURCE",
              help="Classify live frames too: auto, picamera2[:N], opencv:N, a video file "
                   "or a folder of images (as `henet-edge camera --source`).")
@click.option("--every", default=0.1, show_default=True,
              help="Seconds between camera frame starts.")
@user_errors
def serve(model, precision, bind, token, threads, workers, camera, every):
    """Serve the classifier over HTTP: a live page, JSON API, streams, metrics.

    \b
    Endpoints: GET / (page: live camera frames with their top labels, stage
    times and FPS; an upload form), POST /api/classify (image bytes or a
    multipart file field -> the same JSON as one line of `classify --json`),
    GET /api/info, GET /metrics (Prometheus), GET /healthz (says when the
    camera failed), and with --camera GET /stream.mjpg (frames) and
    GET /api/stream (results as Server-Sent Events). Bad requests get a 4xx
    JSON error.

    \b
    Example:
      henet-edge serve --camera auto --bind 127.0.0.1:8080
      curl -F file=@photo.jpg http://127.0.0.1:8080/api/classify
      curl -N http://127.0.0.1:8080/api/stream
    """
    from henet_edge.device.serve.app import serve as run_server
    from henet_edge.device.serve.options import check_serve_options

    check_serve_options(bind, workers=workers, every=every, camera=camera, token=token)
    classifiers = [_make_classifier(model, None, precision, 3, threads) for _ in range(workers)]
    run_server(classifiers, bind, token, camera=camera, every=every)


@main.command()
@click.option("--source", default="auto", show_default=True,
              help="auto, picamera2[:N], opencv:N, a video file, or a folder of images.")
@click.option("--frames", default=0, show_default=True, help="Stop after N frames (0: never).")
@click.option("--every", default=0.0, show_default=True,
              help="Seconds between frame starts (0: as fast as possible).")
@click.option("--model", default=None, help=_MODEL_HELP)
@click.option("--labels", default=None, help="Labels file for a bare .tflite.")
@click.option("--precision", type=click.Choice(["int8", "float32"]), default=None)
@click.option("--top-k", default=3, show_default=True)
@click.option("--threads", default=1, show_default=True, help="Interpreter threads.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per frame.")
@user_errors
def camera(source, frames, every, model, labels, precision, top_k, threads, as_json):
    """Classify camera frames: label, probability, stage times and running FPS.

    \b
    picamera2 needs `sudo apt install python3-picamera2` and a venv made with
    --system-site-packages; USB cameras and video files need
    `pip install opencv-python-headless`. A folder of images stands in for a
    camera; a frame that cannot be decoded is reported and skipped (--frames
    counts good frames, and the exit code is 1 if any was skipped).
    """
    from henet_edge.device.camera import open_source, run

    classifier = _make_classifier(model, labels, precision, top_k, threads)
    count, last_fps, bad = 0, 0.0, []

    def bad_frame(message: str) -> None:
        bad.append(message)
        click.echo(f"frame source {frames_in.name}: {message}", err=True)

    with open_source(source) as frames_in:
        click.echo(f"source: {frames_in.name}", err=True)
        for result in run(classifier, frames_in, frames=frames, every=every,
                          on_bad_frame=bad_frame):
            count, last_fps = result.frame, result.fps
            click.echo(json.dumps(result.to_dict()) if as_json else result.format())
    summary = f"{count} frames, {last_fps:.1f} fps"
    if bad:
        raise HenetEdgeError(f"{summary}, {len(bad)} bad frames skipped")
    _err(summary)


@main.command()
@click.argument("models", nargs=-1)
@click.option("--protocol", type=click.Choice(["paper"]), default="paper", show_default=True,
              help="paper: one image, 1000 passes x 5 repeats on one core, 1 thread.")
@click.option("--runs", type=int, default=None, help="Passes per repeat [1000].")
@click.option("--repeats", type=int, default=None, help="Repeats [5].")
@click.option("--warmup", type=int, default=None, help="Uncounted warm-up passes [50].")
@click.option("--core", type=int, default=None,
              help="CPU core to pin to [the highest-numbered allowed core].")
@click.option("--threads", default=1, show_default=True,
              help="Interpreter threads (the paper's protocol uses 1).")
@click.option("--precision", type=click.Choice(["int8", "float32", "all"]), default="int8",
              show_default=True, help="Which model(s) of a bundle to time.")
@click.option("--image", type=click.Path(path_type=Path), default=None,
              help="Time this image instead of random pixels.")
@click.option("--seed", type=_SEED, default=0, show_default=True,
              help="Seed of the random image.")
@click.option("--xnnpack-check", is_flag=True,
              help="Also time every model without the XNNPACK delegate.")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path), default=None,
              help="Write a latency histogram PNG.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@user_errors
def bench(models, protocol, runs, repeats, warmup, core, threads, precision, image, seed,
          xnnpack_check, plot_path, as_json):
    """Time models with the paper's protocol, with the environment recorded.

    \b
    MODELS are bundle folders or .tflite files (default: the installed
    bundle); several run interleaved (A B A B) and get a ratio table. The
    paper's "Time (s)" is the mean over repeats of the total time of the
    passes. A run is marked suspect when the CPU was throttled, the governor
    was not `performance`, or the latencies spread too widely for a quiet
    core (p90 over twice the median, or a standard deviation over half the
    mean). The CPU's int8 instructions (AVX-512 VNNI, Arm dot-product) are
    printed with the result: int8's speed-up depends on them.

    \b
    Example:
      henet-edge bench --core 3 r2/ r3/ --precision all --plot latency.png
    """
    from henet_edge.device.bench import (
        BenchOptions,
        check_histogram_target,
        format_result,
        run_bench,
    )
    from henet_edge.device.bench import plot_histogram as plot
    from henet_edge.device.classify import default_model

    options = BenchOptions.for_protocol(
        protocol, runs=runs, repeats=repeats, warmup=warmup, core=core, threads=threads,
        precision=precision, image=image, seed=seed, xnnpack_check=xnnpack_check)
    if plot_path is not None:
        check_histogram_target(plot_path)
    specs = list(models) or [default_model()]
    run = run_bench(specs, options, progress=_err)
    result = run.result
    if plot_path is not None:
        written = plot(run, plot_path)
        click.echo(f"wrote {written}", err=True)
    if as_json:
        emit_json(result)
    else:
        click.echo(format_result(result))
    for warning in result["warnings"]:
        _warn_loudly(warning)
    if result["suspect"]:
        _warn_loudly("suspect run: " + "; ".join(result["reasons"]))


@main.command()
@click.option("--model", default=None, help="Check this bundle instead of the default one.")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@user_errors
def doctor(model, as_json):
    """Check that this machine can classify, and say how to fix what is wrong.

    Architecture, Python, runtimes and numpy, cameras, governor, temperature
    and throttling, free disk, the installed bundle (hashes verified) and one
    end-to-end classification. Exits 1 if classification cannot work.
    """
    from henet_edge.device.doctor import format_checks, healthy, run_doctor, to_json

    checks = run_doctor(model)
    if as_json:
        emit_json(to_json(checks))
    else:
        click.echo(format_checks(checks))
    if not healthy(checks):
        raise HenetEdgeError("classification cannot work here: see the FAIL checks and "
                             "their fixes")
# ---- device commands (end)


# ---- deploy commands (begin)
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
        click.option("--connect-timeout", default=10.0, show_default=True,
                     help="Seconds to wait for the TCP connection and SSH banner."),
        click.option("--remote-dir", default="~/.henet-edge", show_default=True,
                     help="State folder on the device."),
        click.option("--remote-python", default="python3", show_default=True,
                     help="The device's Python 3 (used to probe and to create the venv)."),
        click.option("--jobs", default=4, show_default=True,
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


def _finish_fleet(outcomes, as_json: bool, table=None) -> None:
    """Print the outcomes as JSON or ``table()``; then fail the one way fleets fail.

    A single failed host shows only its error; with several, each failure is a
    ``HOST: FAILED: error`` line and the command ends with how many failed.
    """
    from henet_edge.deploy.fleet import failed, fleet_json, raise_for_failures

    if as_json:
        emit_json(fleet_json(outcomes))
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
@click.option("--keep", default=3, show_default=True, help="Bundle versions kept on the device.")
@click.option("--reserve-mb", default=50, show_default=True,
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
    _finish_fleet(outcomes, as_json, lambda: "\n".join(
        format_status(o.result) for o in outcomes if o.ok))
    if verify and unhealthy(outcomes):
        raise HenetEdgeError("the current version is damaged or dangling (WARNING above)")


@main.group()
def remote() -> None:
    """Run device commands on a deployed device: bench, classify, serve (a tunnel)."""


@remote.command("classify")
@click.argument("inputs", nargs=-1, required=True)
@_ssh_options
@click.option("--precision", type=click.Choice(["int8", "float32"]), default=None,
              help="Which model of the bundle [int8 if present].")
@click.option("--top-k", default=3, show_default=True)
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
@click.option("--port", default=8080, show_default=True,
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
    from henet_edge.device.bench import BenchOptions
    from henet_edge.device.metrics import check_plot_target

    with bench.make_context("henet-edge remote bench", list(bench_args)) as ctx:
        p = ctx.params
        BenchOptions.for_protocol(p["protocol"], runs=p["runs"], repeats=p["repeats"],
                                  warmup=p["warmup"], threads=p["threads"],
                                  precision=p["precision"]).validate()
        if p["plot_path"] is not None:
            check_plot_target(p["plot_path"].expanduser(), "latency.png")  # drawn there


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
    current bundle). --image uploads a local image; --plot fetches the PNG.

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


@main.group()
def service() -> None:
    """On the device: run `henet-edge serve` on boot with systemd.

    \b
    A system unit when run as root, a user unit otherwise (it starts at boot
    only with `sudo loginctl enable-linger USER`); Restart=on-failure. From the
    desktop, `henet-edge deploy --service --host H` does the install.
    """


def _service_report(state, as_json: bool) -> None:
    if as_json:
        emit_json(state.to_dict())
        return
    click.echo(state.summary())
    for note in state.notes:
        click.echo(f"note: {note}", err=True)


@service.command("install")
@click.option("--bind", default="127.0.0.1:8080", show_default=True,
              help="HOST:PORT the service listens on (beyond loopback needs --token).")
@click.option("--camera", default=None, metavar="SOURCE", help="As `serve --camera`.")
@click.option("--workers", default=1, show_default=True, help="As `serve --workers`.")
@click.option("--token", default=None, envvar="HENET_EDGE_TOKEN",
              help="Token the service requires (kept in the unit, mode 0600).")
@click.option("--json", "as_json", is_flag=True)
@user_errors
def service_install(bind, camera, workers, token, as_json):
    """Write, enable and start the unit (where systemd runs; else only write it)."""
    from henet_edge.device import service as svc
    from henet_edge.device.serve.options import service_arguments

    args = service_arguments(bind, workers=workers, camera=camera, token=token)
    _service_report(svc.install(args, token=token), as_json)


@service.command("status")
@click.option("--json", "as_json", is_flag=True)
@user_errors
def service_status(as_json):
    """Whether the unit is installed, enabled and running."""
    from henet_edge.device import service as svc

    _service_report(svc.status(), as_json)


@service.command("restart")
@click.option("--json", "as_json", is_flag=True)
@user_errors
def service_restart(as_json):
    """Restart the installed unit (a redeploy does this after its self-test)."""
    from henet_edge.device import service as svc

    _service_report(svc.restart(), as_json)


@service.command("uninstall")
@click.option("--json", "as_json", is_flag=True)
@user_errors
def service_uninstall(as_json):
    """Stop, disable and remove the unit."""
    from henet_edge.device import service as svc

    _service_report(svc.uninstall(), as_json)


@main.command(hidden=True)
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--precision", "precisions", multiple=True,
              type=click.Choice(["int8", "float32"]), help="Test only this precision.")
@click.option("--json", "as_json", is_flag=True)
@user_errors
def selftest(bundle, precisions, as_json):
    """(maintenance) Check the bundle's golden images reproduce on this machine.

    Deploy runs this on the device before switching to a bundle. Exits 1 if
    any golden image's top-1 or logits differ beyond tolerance.
    """
    from henet_edge.device.selftest import format_selftest, run_selftest

    report = run_selftest(bundle, precisions=list(precisions) or None)
    click.echo(json.dumps(report) if as_json else format_selftest(report))
    if not report["passed"]:
        raise HenetEdgeError("self-test failed: the golden images do not reproduce here")
# ---- deploy commands (end)


# ---- desktop commands (begin)
@main.command()
@click.option("--data", default=None,
              help="Image folder (root/<class>/*.jpg), .tar/.tar.gz of one, or cifar10, "
                   "cifar100, svhn (downloaded once and cached).")
@click.option("--out", "run_dir", type=click.Path(path_type=Path), default=None,
              help="Run folder to create [runs/<model>-r<repeat>-<time>].")
@click.option("--resume", "resume_dir", type=click.Path(path_type=Path), default=None,
              help="Continue an interrupted run folder where its last checkpoint left off.")
@click.option("--model", "model_name", type=click.Choice(MODEL_CHOICES), default=None,
              help="Model family [henet].")
@click.option("--repeat", type=int, default=None, help="Stride-1 blocks per stage [3].")
@click.option("--width", "width_multiplier", default=1.0, show_default=True,
              help="HENet width multiplier.")
@click.option("--recipe", type=click.Choice(["fast", "paper"]), default="fast",
              show_default=True,
              help="paper: SGD lr 0.01 x0.1 at 32k/48k of 65k iterations (about 9 h on 2 "
                   "cores); fast: warm-up + cosine, label smoothing, 30 epochs.")
@click.option("--epochs", type=int, default=None, help="Override the recipe's length.")
@click.option("--iterations", type=int, default=None, help="Length in steps instead.")
@click.option("--batch-size", type=int, default=None,
              help="Images per step [the recipe's: 128].")
@click.option("--lr", type=float, default=None, help="Peak learning rate.")
@click.option("--weight-decay", type=float, default=None,
              help="Weight decay in Caffe's convention (Keras L2 of half this) "
                   "[the recipe's: 5e-4].")
@click.option("--seed", type=_SEED, default=0, show_default=True,
              help="Seed of the validation split, the data order and the initial weights.")
@click.option("--val-split", default=0.1, show_default=True,
              help="Held-out fraction when the data has no test split (seeded, stratified).")
@click.option("--formulation", type=click.Choice(["auto", "masked", "native"]), default="auto",
              show_default=True,
              help="Grouped convs as masked dense convs (fast on CPU) or native (GPU).")
@click.option("--limit", type=int, default=None, help="Use only N training images (quick).")
@click.option("--init-from", type=click.Path(exists=True, path_type=Path), default=None,
              help="Start from the weights of a finished run folder (same data, seed and "
                   "split, so validation stays held out) or a .keras file; the schedule "
                   "starts afresh (a warm restart).")
@click.option("--ema", type=float, default=None, metavar="DECAY",
              help="Keep a moving average of the weights (decay per step, e.g. 0.999), "
                   "validate and ship it; the raw weights' validation is logged beside it "
                   "as a control.")
@click.option("--teacher", "teachers", multiple=True, metavar="RUN",
              help="Distil from this finished run folder (repeat for an ensemble; same "
                   "data, seed and split): each batch also learns the teachers' soft "
                   "labels for the same augmented images.")
@click.option("--distill-weight", type=float, default=None,
              help="Share of the loss on the teachers' soft labels, 0 to 1 [0.9].")
@click.option("--distill-temperature", type=float, default=None,
              help="Softmax temperature of the distillation [4].")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
@quiet_logs
@user_errors
def train(data, run_dir, resume_dir, model_name, repeat, width_multiplier, recipe, epochs,
          iterations, batch_size, lr, weight_decay, seed, val_split, formulation, limit,
          init_from, ema, teachers, distill_weight, distill_temperature, as_json):
    """Train HENet (or the ShuffleNet baseline) and write a run folder.

    \b
    The run folder gets model.keras and best.keras (native grouped convs),
    config.json, history.json/.csv, curves.png and train.log, plus a
    checkpoint every epoch: after Ctrl-C or a crash, `--resume RUN_DIR`
    continues with the same schedule.

    \b
    Examples:
      henet-edge train --data cifar10-train-jpeg.tar.gz --out runs/henet-r3
      henet-edge train --data cifar10-train-jpeg.tar.gz --out runs/henet-r3-more \\
          --init-from runs/henet-r3 --epochs 15 --lr 0.04
      henet-edge train --data cifar10-train-jpeg.tar.gz --out runs/henet-r3-kd \\
          --teacher runs/henet-r4 --teacher runs/shufflenet-r5
    """
    _quiet_tensorflow()
    from henet_edge.henet_keras.train import TrainConfig, default_run_dir
    from henet_edge.henet_keras.train import train as run_training

    config = TrainConfig(data=data, model=model_name, repeat=repeat,
                         width_multiplier=width_multiplier, recipe=recipe, epochs=epochs,
                         iterations=iterations, batch_size=batch_size, lr=lr, seed=seed,
                         val_split=val_split, formulation=formulation, limit=limit,
                         init_from=str(init_from) if init_from else None, ema=ema,
                         weight_decay=weight_decay, teachers=list(teachers) or None,
                         distill_weight=distill_weight,
                         distill_temperature=distill_temperature)
    target = (resume_dir if resume_dir is not None else run_dir if run_dir is not None
              else default_run_dir(model_name, repeat))
    echo = _err if as_json else click.echo
    summary = run_training(config, target, resume=resume_dir is not None, echo=echo)
    if as_json:
        emit_json(summary)


@main.command()
@click.argument("model_path", type=click.Path(path_type=Path))
@click.option("--data", default=None,
              help="Labelled images to evaluate on (folder, archive, named set, or a "
                   "held-out .npz sample). Default: a run's own validation split, a "
                   "bundle's shipped validation.npz.")
@click.option("--precision", type=click.Choice(["int8", "float32", "all"]), default="all",
              show_default=True, help="For bundles: which model(s).")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path), default=None,
              help="Write a confusion-matrix PNG here.")
@click.option("--preprocessing", default=None, metavar="default|FILE.json",
              help="For a bare .keras with no run beside it, as in convert.")
@click.option("--json", "as_json", is_flag=True)
@quiet_logs
@user_errors
def evaluate(model_path, data, precision, plot_path, preprocessing, as_json):
    """Top-1, top-5 and per-class accuracy of a .keras model, run, .tflite or bundle.

    .keras models and run folders run in Keras; .tflite files and bundles
    run in the device runtime (LiteRT), never in TensorFlow.
    """
    from henet_edge.convert.evaluate import evaluate_model, format_evaluation
    from henet_edge.device.metrics import check_plot_target

    if plot_path is not None:
        check_plot_target(plot_path, "confusion.png")
    results = evaluate_model(model_path, data=data, precision=precision, plot=plot_path,
                             preprocessing=preprocessing)
    if as_json:
        emit_json(results)
    else:
        click.echo(format_evaluation(results))
    _report_evaluation_data(results)


def _report_evaluation_data(results: dict) -> None:
    """Say when the data was not held out; list every unreadable image and exit 1."""
    if results.get("overlap"):
        _warn_loudly(results["overlap"])
    skipped = results.get("skipped") or []
    for problem in skipped:
        click.echo(f"skipped: {problem}", err=True)
    if skipped:
        raise HenetEdgeError(f"{len(skipped)} images could not be read (the figures above "
                             "leave them out)")


@main.command()
@click.option("--data", required=True, help="Training images (folder, archive or named set).")
@click.option("--num", default=500, show_default=True, help="Images in the set.")
@click.option("--seed", type=_SEED, default=0, show_default=True,
              help="Seed of the sample (the same seed and data give the same set).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output .npz file.")
@click.option("--force", is_flag=True, help="Replace an existing file.")
@click.option("--json", "as_json", is_flag=True)
@quiet_logs
@user_errors
def calibrate(data, num, seed, out, force, as_json):
    """Make a class-stratified, deterministic int8 calibration set.

    The set holds canonical images after the shared preprocessing, with its
    provenance: source, seed, image ids, class histogram and sha256.
    """
    from henet_edge.calibration.calibration_set import make_calibration

    if out.suffix != ".npz":
        raise UsageError(f"--out must end in .npz, got {out}")
    refuse_existing(out, force)
    calib = make_calibration(data, num=num, seed=seed)
    calib.save(out)
    if as_json:
        emit_json({"out": str(out), **calib.summary()})
    else:
        click.echo(calib.describe(out))


@main.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--calibration", required=True,
              help="A calibration .npz (henet-edge calibrate) or a data source to sample.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Bundle folder.")
@click.option("--num", default=500, show_default=True,
              help="Calibration images when sampling a data source.")
@click.option("--seed", type=_SEED, default=0, show_default=True,
              help="Seed of that calibration sample.")
@click.option("--io", type=click.Choice(["int8", "uint8", "float32"]), default="int8",
              show_default=True, help="Input/output tensor type of the int8 model.")
@click.option("--val-data", default=None,
              help="Labelled images for the report card [the run's validation split].")
@click.option("--report-images", type=int, default=None,
              help="Use at most N validation images for the report card.")
@click.option("--labels", "labels_file", type=click.Path(exists=True, path_type=Path),
              default=None, help="labels.txt for a bare .keras file.")
@click.option("--min-agreement", default=0.98, show_default=True,
              help="Gate: int8 top-1 agreement with Keras.")
@click.option("--max-drop", default=1.0, show_default=True,
              help="Gate: int8 accuracy drop in points.")
@click.option("--no-gate", is_flag=True, help="Write the bundle even if a gate fails.")
@click.option("--include-keras", is_flag=True, help="Copy the source .keras into the bundle.")
@click.option("--include-calibration", is_flag=True,
              help="Store the calibration set in the bundle (what `demo` converts with).")
@click.option("--include-validation", type=click.IntRange(min=0), default=0, metavar="N",
              help="Store N held-out validation images in the bundle (what `demo` measures "
                   "accuracy on) [0: none].")
@click.option("--lowering", type=click.Choice(LOWERINGS), default=DEFAULT_LOWERING,
              show_default=True,
              help="How grouped convs and shuffles become TFLite ops; the same function "
                   "(`henet-edge compare --lowering grouped,folded` times them).")
@click.option("--preprocessing", default=None, metavar="default|FILE.json",
              help="For a bare .keras with no run config.json beside it: 'default' "
                   "(henet-edge/v1, CIFAR mean/std, 32 -> 31 crop) or a JSON file with it (a "
                   "run's config.json, a bundle's manifest.json) [the run's].")
@click.option("--force", is_flag=True, help="Replace an existing bundle folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@quiet_logs
@user_errors
def convert(source, calibration, out, num, seed, io, val_data, report_images, labels_file,
            min_agreement, max_drop, no_gate, include_keras, include_calibration,
            include_validation, lowering, preprocessing, force, as_json):
    """Convert a run folder or .keras model to a float32 + int8 TFLite bundle.

    \b
    Writes model_float32.tflite, model_int8.tflite (full integer, per-channel
    conv weights), labels.txt, golden images, report.json/report.md (the
    quantization report card) and manifest.json (hashes of every file).
    Fails, writing nothing, if the op audit or a quantization gate fails.

    \b
    Example:
      henet-edge convert runs/henet-r3 --calibration calib.npz --out bundles/henet-r3
    """
    _quiet_tensorflow()
    from henet_edge.convert.pipeline import ConvertOptions
    from henet_edge.convert.pipeline import convert as run_convert
    from henet_edge.convert.report import Gates, format_scores
    from henet_edge.device.inputs import read_labels

    options = ConvertOptions(
        num=num, seed=seed, val_data=val_data, report_images=report_images, io=io,
        force=force, gate=not no_gate, gates=Gates(min_agreement, max_drop),
        labels=read_labels(labels_file) if labels_file else None, include_keras=include_keras,
        include_calibration=include_calibration, include_validation=include_validation,
        lowering=lowering, preprocessing=preprocessing)
    echo = _err if as_json else click.echo
    manifest = run_convert(source, calibration, out, options, log=echo)
    if as_json:
        emit_json(manifest)
    else:
        click.echo(format_scores(manifest, out))


@main.command()
@click.option("--models", default="henet:2,3,4;shufflenet:2,3,4,5", show_default=True,
              help="Families and repeats to compare.")
@click.option("--runs", default=1000, show_default=True, help="Passes per repeat.")
@click.option("--repeats", default=5, show_default=True, help="Repeats of the passes.")
@click.option("--warmup", default=50, show_default=True)
@click.option("--core", type=int, default=None, help="CPU core to pin to [the last one].")
@click.option("--calibration", default=None,
              help="Calibration images (data source or .npz) [random inputs].")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path),
              default=Path("compare.png"), show_default=True,
              help="PNG of latency against MACs.")
@click.option("--lowering", "lowerings", default="grouped,folded", show_default=True,
              help="Comma-separated lowerings to time side by side (grouped, folded, "
                   "folded-all); speed-ups are against the first.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw figures as JSON.")
@quiet_logs
@user_errors
def compare(models, runs, repeats, warmup, core, calibration, plot_path, lowerings, as_json):
    """HENet r2-r4 vs ShuffleNet r2-r5: sizes and single-core latency, paper's protocol.

    \b
    Builds every model, lowers it each way asked (grouped: the Keras graph as
    is; folded: channel shuffles at full resolution folded into the 1x1 conv
    before them), converts each to float32 and int8 TFLite, and times them all
    in one interleaved run on one pinned core (one thread, XNNPACK). Prints a
    table laid out like the paper's Table 3 with the paper's figures beside
    the measured ones, the HENet/ShuffleNet latency ratios, and each
    lowering's speed-up.
    """
    from henet_edge.convert.compare import parse_lowerings, parse_models
    from henet_edge.device.bench import BenchOptions
    from henet_edge.device.metrics import check_plot_target

    # Every check before TensorFlow and the slow builds.
    wanted, chosen = parse_models(models), parse_lowerings(lowerings)
    options = BenchOptions(runs=runs, repeats=repeats, warmup=warmup, core=core,
                           precision="all")
    options.validate()
    if plot_path:
        plot_path = check_plot_target(plot_path, "compare.png")
    _quiet_tensorflow()
    from henet_edge.convert.compare import calibration_inputs, format_machine, format_table, plot
    from henet_edge.convert.compare import compare as run_compare

    echo = _err if as_json else click.echo
    result = run_compare(wanted, calibration=calibration_inputs(calibration), log=echo,
                         lowerings=chosen, options=options)
    if plot_path:
        plot(result, plot_path)
    if as_json:
        emit_json(result)
        return
    click.echo(format_table(result))
    click.echo("\n" + format_machine(result))
    if plot_path:
        click.echo(f"plot: {plot_path}")


@main.command()
@click.option("--model", type=click.Path(path_type=Path), default=None,
              help="Run folder or .keras to demo [the shipped default model].")
@click.option("--calibration", default=None,
              help="Calibration .npz or data source [the shipped calibration set].")
@click.option("--val-data", default=None,
              help="Held-out images for the accuracy figure (data source or .npz) [the "
                   "default model's shipped held-out sample].")
@click.option("--target", type=click.Path(path_type=Path), default=None,
              help="Local folder laid out like a device [a temporary folder, deleted at "
                   "the end].")
@click.option("--keep", is_flag=True,
              help="Keep the temporary device folder (and say where it is).")
@_ssh_options
@click.option("--quick", "speed", flag_value="quick", help="100 x 2 passes per precision.")
@click.option("--full", "speed", flag_value="full",
              help="The paper's full protocol: 1000 x 5 passes per precision.")
@click.option("--core", type=int, default=None, help="Core to time on [the last one].")
@click.option("--no-gate", is_flag=True, help="Go on even if a quantization gate fails.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@quiet_logs(add_option=False)
@user_errors
def demo(model, calibration, val_data, target, keep, speed, core, no_gate, as_json, **conn):
    """The whole pipeline in a few minutes: convert, deploy, bench, classify.

    \b
    1. converts the default model (or --model) to float32 and int8 TFLite
       with its calibration set (op audit, quantization report card);
    2. deploys the bundle to a local folder laid out exactly like a Pi,
       through the same installer as `deploy` (only the connection differs),
       or with --host to a real device over SSH;
    3. times both precisions with the paper's protocol on one core;
    4. classifies the bundle's sample images with the installed bundle;
    then prints one summary table.
    """
    _quiet_tensorflow()
    from henet_edge.deploy.demo import DemoOptions, format_summary, run_demo

    options = DemoOptions(model=model, calibration=calibration, val_data=val_data, core=core,
                          gate=not no_gate, verbose=conn["verbose"]).at_speed(speed)
    if conn["hosts"] or conn["hosts_file"]:
        options.fleet = _fleet_options(conn)
    log = _err if as_json else click.echo
    summary = run_demo(options, log, target=target, keep=keep)
    if as_json:
        emit_json(summary)
    else:
        click.echo(format_summary(summary))

# ---- desktop commands (end)


if __name__ == "__main__":  # pragma: no cover
    main()
