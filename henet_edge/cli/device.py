"""Commands that run on the Pi: classify, camera, bench, serve, service, doctor, selftest."""

from __future__ import annotations

import json
from pathlib import Path

import click

from henet_edge import HenetEdgeError, UsageError
from henet_edge.device.serve.options import DEFAULT_BIND, MAX_WORKERS

from .base import (
    _SEED,
    SECONDS,
    THREADS,
    TOP_K,
    PlotPath,
    _err,
    _warn_loudly,
    emit_json,
    main,
    user_errors,
)

_MODEL_HELP = ("Bundle folder, or a .tflite with --labels. Default: the installed bundle "
               "($HENET_EDGE_HOME/current, else ~/.henet-edge/current), else the bundled "
               "default model.")


def _make_classifier(model, labels, precision, top_k, threads):
    from henet_edge.device.classify import Classifier

    classifier = Classifier(model, labels=labels, precision=precision, top_k=top_k,
                            num_threads=threads)
    if classifier.model.delegate_kind in ("partial", "none"):
        _warn_loudly(f"delegate: {classifier.model.delegate}; inference will be slow")
    return classifier


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--model", default=None, help=_MODEL_HELP)
@click.option("--labels", default=None, help="Labels file (one per line) for a bare .tflite.")
@click.option("--precision", type=click.Choice(["int8", "float32"]), default=None,
              help="Which model of the bundle [int8 if present].")
@click.option("--top-k", type=TOP_K, default=3, show_default=True, help="Labels to show per image.")
@click.option("--threads", type=THREADS, default=1, show_default=True,
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
@click.option("--bind", default=DEFAULT_BIND, show_default=True,
              help="HOST:PORT to listen on; any non-loopback host requires a token.")
@click.option("--token", default=None, envvar="HENET_EDGE_TOKEN",
              help="Token every request but the page's must carry (Authorization: Bearer T "
                   "or ?token=T; the page takes it from its URL, http://HOST:PORT/#token=T); "
                   "generated and printed once when binding beyond loopback.")
@click.option("--token-file", default=None, metavar="FILE",
              help="Read the token from FILE's first line instead (kept out of the "
                   "process list; the service uses this).")
@click.option("--threads", type=THREADS, default=1, show_default=True,
              help="Interpreter threads.")
@click.option("--workers", type=click.IntRange(1, MAX_WORKERS), default=1, show_default=True,
              help="Interpreters serving requests side by side (one model load each; 1 to "
                   f"{MAX_WORKERS}).")
@click.option("--camera", default=None, metavar="SOURCE",
              help="Classify live frames too: auto, picamera2[:N], opencv:N, a video file "
                   "or a folder of images (as `henet-edge camera --source`).")
@click.option("--every", type=SECONDS, default=0.1, show_default=True,
              help="Seconds between camera frame starts.")
@user_errors
def serve(model, precision, bind, token, token_file, threads, workers, camera, every):
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
    from henet_edge.device.serve.options import check_serve_options, read_token_file

    if token_file is not None:
        token = read_token_file(token_file, token)
    check_serve_options(bind, workers=workers, every=every, camera=camera, token=token)
    classifiers = [_make_classifier(model, None, precision, 3, threads) for _ in range(workers)]
    run_server(classifiers, bind, token, camera=camera, every=every)


@main.command()
@click.option("--source", default="auto", show_default=True,
              help="auto, picamera2[:N], opencv:N, a video file, or a folder of images.")
@click.option("--frames", type=click.IntRange(0), default=0, show_default=True,
              help="Stop after N frames (0: never).")
@click.option("--every", type=SECONDS, default=0.0, show_default=True,
              help="Seconds between frame starts (0: as fast as possible).")
@click.option("--model", default=None, help=_MODEL_HELP)
@click.option("--labels", default=None, help="Labels file for a bare .tflite.")
@click.option("--precision", type=click.Choice(["int8", "float32"]), default=None)
@click.option("--top-k", type=TOP_K, default=3, show_default=True)
@click.option("--threads", type=THREADS, default=1, show_default=True,
              help="Interpreter threads.")
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
    if frames == 0 or count < frames:  # not stopped by --frames: the source came to its end
        summary += f"; {frames_in.name} has no more frames" + (
            f" (--frames asked {frames})" if frames else "")
    if bad:
        raise HenetEdgeError(f"{summary}, {len(bad)} bad frames skipped")
    _err(summary)


@main.command()
@click.argument("models", nargs=-1)
@click.option("--protocol", type=click.Choice(["paper"]), default="paper", show_default=True,
              help="paper: one image, 1000 passes x 5 repeats on one core, 1 thread.")
@click.option("--runs", type=click.IntRange(1), default=None, help="Passes per repeat [1000].")
@click.option("--repeats", type=click.IntRange(1), default=None, help="Repeats [5].")
@click.option("--warmup", type=click.IntRange(0), default=None,
              help="Uncounted warm-up passes [50].")
@click.option("--core", type=click.IntRange(0), default=None,
              help="CPU core to pin to [the highest-numbered allowed core].")
@click.option("--threads", type=THREADS, default=1, show_default=True,
              help="Interpreter threads (the paper's protocol uses 1).")
@click.option("--precision", type=click.Choice(["int8", "float32", "all"]), default="int8",
              show_default=True, help="Which model(s) of a bundle to time.")
@click.option("--image", type=click.Path(path_type=Path), default=None,
              help="Time this image instead of random pixels.")
@click.option("--seed", type=_SEED, default=0, show_default=True,
              help="Seed of the random image.")
@click.option("--xnnpack-check", is_flag=True,
              help="Also time every model without the XNNPACK delegate.")
@click.option("--plot", "plot_path", type=PlotPath("latency.png"), default=None,
              help="Write a latency histogram PNG (needs matplotlib).")
@click.option("--latencies", "latencies_path", type=click.Path(path_type=Path), default=None,
              help="Write every pass's latency (ns, per model) as JSON.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@user_errors
def bench(models, protocol, runs, repeats, warmup, core, threads, precision, image, seed,
          xnnpack_check, plot_path, latencies_path, as_json):
    """Time models with the paper's protocol, with the environment recorded.

    \b
    MODELS are bundle folders or .tflite files (default: the installed
    bundle); several run interleaved (A B A B) and get a ratio table. The
    paper's "Time (s)" is the mean over repeats of the total time of the
    passes. A run is marked suspect when the CPU was throttled, the governor
    was not `performance`, or the latencies spread too widely for a quiet
    core (p90 over twice the median, or a standard deviation over half the
    mean). The CPU's int8 instructions (AVX-512 VNNI, AMX-INT8, Arm
    dot-product) are printed with the result. They do not settle whether int8
    is faster: that also depends on the runtime's kernels for the model's
    convs, so time both (`--precision all`).

    \b
    Example:
      henet-edge bench --core 3 r2/ r3/ --precision all --plot latency.png
    """
    from henet_edge.device.bench import (
        BenchError,
        BenchOptions,
        check_histogram_target,
        check_latencies_target,
        format_result,
        run_bench,
        write_latencies,
    )
    from henet_edge.device.bench import plot_histogram as plot
    from henet_edge.device.classify import default_model

    options = BenchOptions.for_protocol(
        protocol, runs=runs, repeats=repeats, warmup=warmup, core=core, threads=threads,
        precision=precision, image=image, seed=seed, xnnpack_check=xnnpack_check)
    try:  # counts over the limits, a core this process may not use: the command line
        options.validate_here()
    except BenchError as exc:
        raise UsageError(str(exc)) from None
    if plot_path is not None:
        check_histogram_target(plot_path)
    if latencies_path is not None:
        check_latencies_target(latencies_path)
    specs = list(models) or [default_model()]
    run = run_bench(specs, options, progress=_err)
    result = run.result
    if plot_path is not None:
        written = plot(run, plot_path)
        click.echo(f"wrote {written}", err=True)
    if latencies_path is not None:
        click.echo(f"wrote {write_latencies(run, latencies_path)}", err=True)
    if as_json:
        emit_json(result)
    else:
        click.echo(format_result(result))
    for warning in result["warnings"]:
        _warn_loudly(warning)
    if result["suspect"]:
        _warn_loudly("suspect run: " + "; ".join(result["reasons"]))


@main.command()
@click.option("--model", default=None,
              help="Check this bundle (or bare .tflite) instead of the default one.")
@click.option("--labels", default=None, help="Labels file for a bare .tflite.")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@user_errors
def doctor(model, labels, as_json):
    """Check that this machine can classify, and say how to fix what is wrong.

    Architecture, Python, runtimes and numpy, cameras, governor, temperature
    and throttling, free disk, the installed bundle (hashes verified) and one
    end-to-end classification. Exits 1 if classification cannot work.
    """
    from henet_edge.device.doctor import format_checks, healthy, run_doctor, to_json

    checks = run_doctor(model, labels=labels)
    if as_json:
        emit_json(to_json(checks))
    else:
        click.echo(format_checks(checks))
    if not healthy(checks):
        raise HenetEdgeError("classification cannot work here: see the FAIL checks and "
                             "their fixes")


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
@click.option("--bind", default=DEFAULT_BIND, show_default=True,
              help="HOST:PORT the service listens on (beyond loopback needs --token).")
@click.option("--camera", default=None, metavar="SOURCE", help="As `serve --camera`.")
@click.option("--workers", type=click.IntRange(1, MAX_WORKERS), default=1, show_default=True,
              help="As `serve --workers`.")
@click.option("--token", default=None, envvar="HENET_EDGE_TOKEN",
              help="Token the service requires (kept in the state folder's service-token, "
                   "mode 0600, not in the unit).")
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


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path), required=False)
@click.option("--precision", "precisions", multiple=True,
              type=click.Choice(["int8", "float32"]), help="Test only this precision.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@user_errors
def selftest(bundle, precisions, as_json):
    """Check a bundle reproduces its desktop results on this machine.

    \b
    Classifies the golden images the desktop stored in BUNDLE (default: the
    installed bundle) and compares top-1 and logits with the desktop's within
    tolerance. Deploy runs it on the device before switching to a bundle; run
    it yourself after changing the runtime. Exits 1 if any image differs.

    \b
    Example:
      henet-edge selftest --precision int8
    """
    from henet_edge.device.classify import default_model
    from henet_edge.device.selftest import format_selftest, run_selftest

    report = run_selftest(bundle or default_model(), precisions=list(precisions) or None)
    click.echo(json.dumps(report) if as_json else format_selftest(report))
    if not report["passed"]:
        raise HenetEdgeError("self-test failed: the golden images do not reproduce here")
