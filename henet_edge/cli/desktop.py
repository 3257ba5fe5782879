"""Desktop commands: profile, train, evaluate, calibrate, convert, compare, demo."""

from __future__ import annotations

from pathlib import Path

import click

from henet_edge import HenetEdgeError, UsageError
from henet_edge.calibration.calibration_set import DEFAULT_NUM
from henet_edge.convert.lowering import DEFAULT_LOWERING, LOWERINGS
from henet_edge.convert.report import DEFAULT_GATES
from henet_edge.device.bench import PROTOCOLS
from henet_edge.henet_keras.data import AUGMENTS
from henet_edge.henet_keras.registry import check_model_args, model_names, model_spec

from .base import (
    _SEED,
    MODEL_CHOICES,
    PlotPath,
    _err,
    _quiet_tensorflow,
    _warn_loudly,
    emit_json,
    main,
    quiet_logs,
    user_errors,
)
from .deploy import _fleet_options, _ssh_options

PAPER = PROTOCOLS["paper"]  # the paper's timing protocol: compare's defaults


@main.command()
@click.option("--model", "model_name", default="henet", show_default=True,
              help=f"Model family: {', '.join(model_names())}.")
@click.option("--repeat", type=click.IntRange(1, 50), default=3, show_default=True,
              help="Stride-1 blocks per stage (at most 50).")
@click.option("--classes", type=click.IntRange(2, 100_000), default=10, show_default=True)
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
@click.option("--limit", type=int, default=None,
              help="Use only N images of the data, before the validation split (quick).")
@click.option("--init-from", type=click.Path(exists=True, path_type=Path), default=None,
              help="Start from the weights of a finished run folder (same data, seed and "
                   "split, so validation stays held out) or a .keras file; the schedule "
                   "starts afresh (a warm restart).")
@click.option("--ema", type=float, default=None, metavar="DECAY",
              help="Keep a moving average of the weights (decay per step, e.g. 0.999), "
                   "validate and ship it; the raw weights' validation is logged beside it "
                   "as a control.")
@click.option("--mixup", type=float, default=None, metavar="ALPHA",
              help="Blend each training image with another, and their labels alike, "
                   "with weights drawn from Beta(ALPHA, ALPHA) (e.g. 1.0); with --teacher "
                   "the teachers label the blended images.")
@click.option("--augment", type=click.Choice(AUGMENTS), default=None,
              help="Training augmentation: cifar (zero-pad 4, random crop, random flip), "
                   "flip (centre crop, random flip: no padded borders) or none (centre "
                   "crop) [the data's: cifar; svhn none].")
@click.option("--teacher", "teachers", multiple=True, metavar="RUN",
              help="Distil from this finished run folder (repeat for an ensemble; same "
                   "data, seed and split): each batch also learns the teachers' soft "
                   "labels for the same augmented images.")
@click.option("--distill-weight", type=float, default=None,
              help="Share of the loss on the teachers' soft labels, 0 to 1 [0.9].")
@click.option("--distill-temperature", type=float, default=None,
              help="Softmax temperature of the distillation [4].")
@click.option("--teacher-flip", is_flag=True,
              help="The teachers label each image and its mirror image, averaged (a "
                   "better teacher for twice its time).")
@click.option("--qat", is_flag=True,
              help="Quantization-aware training: round weights and activations as the "
                   "int8 TFLite model will (ranges calibrated on the starting weights), so "
                   "they learn to tolerate it; validation then scores the simulated int8 "
                   "model. Meant for a short fine-tune with --init-from.")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
@quiet_logs
@user_errors
def train(data, run_dir, resume_dir, model_name, repeat, width_multiplier, recipe, epochs,
          iterations, batch_size, lr, weight_decay, seed, val_split, formulation, limit,
          init_from, ema, mixup, augment, teachers, distill_weight, distill_temperature,
          teacher_flip, qat, as_json):
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
      henet-edge train --data cifar10-train-jpeg.tar.gz --out runs/henet-r3-fm \\
          --init-from runs/henet-r3-kd --epochs 60 --lr 0.02 --mixup 1.0 \\
          --teacher-flip --teacher runs/henet-r4 --teacher runs/shufflenet-r5
    """
    _quiet_tensorflow()
    from henet_edge.henet_keras.run import Run
    from henet_edge.henet_keras.run_folder import default_run_dir
    from henet_edge.henet_keras.train import TrainConfig
    from henet_edge.henet_keras.train import train as run_training

    config = TrainConfig(data=data, model=model_name, repeat=repeat,
                         width_multiplier=width_multiplier, recipe=recipe, epochs=epochs,
                         iterations=iterations, batch_size=batch_size, lr=lr, seed=seed,
                         val_split=val_split, formulation=formulation, limit=limit,
                         init_from=str(init_from) if init_from else None, ema=ema,
                         mixup=mixup, augment=augment,
                         weight_decay=weight_decay, teachers=list(teachers) or None,
                         distill_weight=distill_weight,
                         distill_temperature=distill_temperature,
                         teacher_flip=teacher_flip, qat=qat)
    target = (resume_dir if resume_dir is not None else run_dir if run_dir is not None
              else default_run_dir(model_name, repeat))
    echo = _err if as_json else click.echo
    try:
        summary = run_training(config, target, resume=resume_dir is not None, echo=echo)
    except KeyboardInterrupt:
        if Run.is_run(target):  # begun: its last finished epoch is kept
            _err(f"stopped; go on from the last finished epoch with: henet-edge train "
                 f"--resume {target}")
        raise
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
@click.option("--plot", "plot_path", type=PlotPath("confusion.png"), default=None,
              help="Write a confusion-matrix PNG here; with several models the first "
                   "goes here, each other beside it as NAME-MODEL.png.")
@click.option("--preprocessing", default=None, metavar="default|FILE.json",
              help="For a bare .keras with no run beside it, as in convert.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the results as JSON: per precision top-1, top-5 and per-class "
                   "accuracy; the data as a sentence (data) and for scripts (data_source: "
                   "kind and path); skipped images.")
@quiet_logs
@user_errors
def evaluate(model_path, data, precision, plot_path, preprocessing, as_json):
    """Top-1, top-5 and per-class accuracy of a .keras model, run, .tflite or bundle.

    .keras models and run folders run in Keras; .tflite files and bundles
    run in the device runtime (LiteRT), never in TensorFlow.
    """
    from henet_edge.convert.evaluate import evaluate_model, format_evaluation

    results = evaluate_model(model_path, data=data, precision=precision, plot=plot_path,
                             preprocessing=preprocessing, warn=_warn_loudly)
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
@click.option("--num", default=DEFAULT_NUM, show_default=True, help="Images in the set.")
@click.option("--seed", type=_SEED, default=0, show_default=True,
              help="Seed of the sample (the same seed and data give the same set).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output .npz file.")
@click.option("--force", is_flag=True, help="Replace an existing file.")
@click.option("--run", "run_dir", type=click.Path(path_type=Path), default=None,
              help="The run folder the set will convert: its validation split (the report "
                   "card's images) is left out.")
@click.option("--json", "as_json", is_flag=True)
@quiet_logs
@user_errors
def calibrate(data, num, seed, out, force, run_dir, as_json):
    """Make a class-stratified, deterministic int8 calibration set.

    The set holds canonical images after the shared preprocessing, with its
    provenance: source, seed, image ids, class histogram and sha256.
    """
    from henet_edge.calibration.calibration_set import write_calibration

    calib = write_calibration(data, out, num=num, seed=seed, force=force, run=run_dir)
    if as_json:
        emit_json({"out": str(out), **calib.summary()})
    else:
        click.echo(calib.describe(out))


@main.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--calibration", required=True,
              help="A calibration .npz (henet-edge calibrate) or a data source to sample.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Bundle folder.")
@click.option("--num", default=DEFAULT_NUM, show_default=True,
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
@click.option("--min-agreement", default=DEFAULT_GATES.min_agreement, show_default=True,
              help="Gate: int8 top-1 agreement with Keras.")
@click.option("--max-drop", default=DEFAULT_GATES.max_drop, show_default=True,
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
                   "(`henet-edge compare --lowering folded,dense` times them on this CPU).")
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
@click.option("--runs", default=PAPER["runs"], show_default=True, help="Passes per repeat.")
@click.option("--repeats", default=PAPER["repeats"], show_default=True,
              help="Repeats of the passes.")
@click.option("--warmup", default=PAPER["warmup"], show_default=True)
@click.option("--core", type=int, default=None, help="CPU core to pin to [the last one].")
@click.option("--calibration", default=None,
              help="Calibration images (data source or .npz) [random inputs].")
@click.option("--plot", "plot_path", type=PlotPath("compare.png"),
              default=Path("compare.png"), show_default=True,
              help="PNG of latency against MACs.")
@click.option("--lowering", "lowerings", default="folded,dense", show_default=True,
              help=f"Comma-separated lowerings to time side by side ({', '.join(LOWERINGS)}); "
                   "speed-ups are against the first.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw figures as JSON.")
@quiet_logs
@user_errors
def compare(models, runs, repeats, warmup, core, calibration, plot_path, lowerings, as_json):
    """HENet r2-r4 vs ShuffleNet r2-r5: sizes and single-core latency, paper's protocol.

    \b
    Builds every model, lowers it each way asked (grouped: the Keras graph as
    is; folded: channel shuffles at full resolution folded into the 1x1 conv
    before them; folded-all: every such shuffle; dense: that, and every grouped
    conv as a dense one on block-diagonal weights), converts each to float32
    and int8 TFLite, and times them all in one interleaved run on one pinned
    core (one thread, XNNPACK). Prints a table laid out like the paper's
    Table 3 with the paper's figures beside the measured ones, the
    HENet/ShuffleNet latency ratios, and each lowering's speed-up.
    """
    from henet_edge.convert.compare import check_request
    from henet_edge.device.bench import BenchOptions

    request = check_request(models, lowerings, BenchOptions(
        runs=runs, repeats=repeats, warmup=warmup, core=core, precision="all"), plot_path)
    _quiet_tensorflow()
    from henet_edge.convert.compare import calibration_inputs, format_machine, format_table, plot
    from henet_edge.convert.compare import compare as run_compare

    echo = _err if as_json else click.echo
    result = run_compare(request.models, calibration=calibration_inputs(calibration), log=echo,
                         lowerings=request.lowerings, options=request.options)
    if request.plot:
        plot(result, request.plot)
    if as_json:
        emit_json(result)
        return
    click.echo(format_table(result))
    click.echo("\n" + format_machine(result))
    if request.plot:
        click.echo(f"plot: {request.plot}")


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
@click.option("--quick", is_flag=True, help="100 x 2 passes per precision.")
@click.option("--full", is_flag=True,
              help="The paper's full protocol: 1000 x 5 passes per precision.")
@click.option("--core", type=click.IntRange(0), default=None,
              help="Core to time on [the last one; refused while every core is busy, as "
                   "timings would mislead: give a core to time there anyway].")
@click.option("--no-gate", is_flag=True, help="Go on even if a quantization gate fails.")
@click.option("--lowering", type=click.Choice(LOWERINGS), default=DEFAULT_LOWERING,
              show_default=True, help="How the conversion lowers grouped convs (as for "
                                      "`convert`); it decides which int8 kernels run.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@quiet_logs(add_option=False)
@user_errors
def demo(model, calibration, val_data, target, keep, quick, full, core, no_gate, lowering,
         as_json, **conn):
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
    if quick and full:  # one destination for both flags let the last one win unsaid
        raise UsageError("--quick and --full: give one of them")
    _quiet_tensorflow()
    from henet_edge.deploy.demo import DemoOptions, format_summary, run_demo

    options = DemoOptions(model=model, calibration=calibration, val_data=val_data, core=core,
                          gate=not no_gate, lowering=lowering,
                          verbose=conn["verbose"]).at_speed(
                              "quick" if quick else "full" if full else None)
    if conn["hosts"] or conn["hosts_file"]:
        options.fleet = _fleet_options(conn)
    log = _err if as_json else click.echo
    summary = run_demo(options, log, target=target, keep=keep)
    if as_json:
        emit_json(summary)
    else:
        click.echo(format_summary(summary))
