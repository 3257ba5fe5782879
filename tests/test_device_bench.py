"""``henet-edge bench``: the timing protocol, run short on real interpreters.

No assertion here depends on how fast anything is: only on what was timed,
in which order, and how the result is put together.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from henet_edge.cli import main
from henet_edge.device.bench import (
    PROTOCOLS,
    BenchError,
    BenchOptions,
    check_core,
    format_result,
    latency_stats,
    pinned,
    resolve_models,
    run_bench,
)
from henet_edge.device.bundle import BundleError
from henet_edge.device.environment import Probe

from .device_helpers import copy_bundle, fake_pi, golden, wrong_shape_model

SHORT = {"runs": 12, "repeats": 3, "warmup": 2}


def test_paper_protocol_numbers():
    assert PROTOCOLS["paper"] == {"runs": 1000, "repeats": 5, "warmup": 50}
    options = BenchOptions()
    assert (options.runs, options.repeats, options.threads) == (1000, 5, 1)


def test_models_run_interleaved_and_results_add_up(tiny_bundle):
    order: list[str] = []
    run = run_bench([tiny_bundle], BenchOptions(**SHORT, precision="all"),
                    probe=Probe(vcgencmd=None), progress=order.append)
    result = run.result
    names = [row["name"] for row in result["models"]]
    assert [n.split("/")[-1] for n in names] == ["int8", "float32"]
    assert order == [f"repeat {r}/3: {n}" for r in (1, 2, 3) for n in names]  # A B A B A B

    for row in result["models"]:
        assert len(row["totals_s"]) == 3
        assert row["time_s"] == pytest.approx(sum(row["totals_s"]) / 3)
        assert len(run.latencies_ns[row["name"]]) == 12 * 3
        s = row["per_inference_ms"]
        ms = np.asarray(run.latencies_ns[row["name"]]) / 1e6  # the statistics of these
        assert s["median"] == pytest.approx(np.median(ms))
        assert s["p90"] == pytest.approx(np.percentile(ms, 90))
        assert (s["min"], s["max"]) == pytest.approx((ms.min(), ms.max()))
        assert row["first_inference_ms"] > 0 and row["load_ms"] > 0
        assert len(row["sha256"]) == 64
    matrix = result["ratios"]["matrix"]
    assert result["ratios"]["names"] == names
    assert matrix[0][0] == matrix[1][1] == 1.0
    times = [row["time_s"] for row in result["models"]]
    assert matrix[0][1] == pytest.approx(times[0] / times[1])  # row time over column time

    assert not result["paper_protocol"]
    assert result["protocol"] == "paper (changed: runs 12, repeats 3)"
    assert result["threads"] == 1
    assert result["core"] in os.sched_getaffinity(0)
    env = result["environment"]
    assert env["core"] == result["core"]
    assert env["runtime"]["name"] == "ai_edge_litert"
    assert list(env["runtime"]["delegates"]) == names
    assert set(env["before"]) == set(env["after"])
    json.dumps(result)  # JSON-able as it is


def test_latency_stats():
    stats = latency_stats([1_000_000, 2_000_000, 3_000_000, 4_000_000])
    assert stats["mean"] == 2.5 and stats["median"] == 2.5
    assert stats["min"] == 1.0 and stats["max"] == 4.0


def test_xnnpack_check_times_both_ways(tiny_bundle):
    result = run_bench([tiny_bundle], BenchOptions(runs=5, repeats=1, warmup=1,
                                                   xnnpack_check=True),
                       probe=Probe(vcgencmd=None)).result
    rows = {row["name"]: row for row in result["models"]}
    name = next(n for n in rows if "XNNPACK" not in n)
    plain = rows[f"{name} (no XNNPACK)"]
    assert plain["delegate"] == "none (built-in kernels)"
    assert plain["delegate_nodes"] == 0
    assert rows[name]["delegate_nodes"] >= 1 and rows[name]["delegate"].startswith("XNNPACK")
    (check,) = result["xnnpack_check"]
    assert check["name"] == name
    assert check["speedup"] == pytest.approx(plain["time_s"] / rows[name]["time_s"])


def test_suspect_runs_are_marked_with_reasons(tmp_path, tiny_bundle):
    root, vcgencmd = fake_pi(tmp_path, governor="powersave", throttled=("0x0", "0x40000"))
    result = run_bench([tiny_bundle], BenchOptions(runs=3, repeats=1, warmup=0),
                       probe=Probe(root, vcgencmd)).result
    assert result["suspect"]
    assert any("'powersave', not 'performance'" in r for r in result["reasons"])
    assert any("during the run: throttling has occurred" in r for r in result["reasons"])
    env = result["environment"]
    assert env["board"] == "Raspberry Pi 4 Model B Rev 1.4"
    assert env["before"]["throttled"]["raw"] == "0x0"
    assert env["after"]["throttled"]["raw"] == "0x40000"


def test_an_image_instead_of_random_pixels(tiny_bundle, tmp_path):
    image = tiny_bundle / golden(tiny_bundle)[0]["file"]
    result = run_bench([tiny_bundle], BenchOptions(runs=3, repeats=1, warmup=0, image=image),
                       probe=Probe(vcgencmd=None)).result
    assert result["models"][0]["input"] == f"image {image}"
    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.raises(BenchError, match="not an image"):
        run_bench([tiny_bundle], BenchOptions(runs=3, repeats=1, image=tmp_path / "bad.png"),
                  probe=Probe(vcgencmd=None))


def test_bare_tflite_of_another_shape_runs_on_random_pixels(tiny_bundle, tmp_path):
    other = wrong_shape_model(tmp_path, 3)
    result = run_bench([other, tiny_bundle / "model_int8.tflite"],
                       BenchOptions(runs=3, repeats=1, warmup=0),
                       probe=Probe(vcgencmd=None)).result
    assert [row["name"] for row in result["models"]] == ["wrong_shape", "model_int8"]
    with pytest.raises(BenchError, match="does not match the preprocessing"):
        run_bench([other], BenchOptions(runs=3, repeats=1, image=tiny_bundle /
                                        golden(tiny_bundle)[0]["file"]),
                  probe=Probe(vcgencmd=None))


def test_bad_cores_models_and_counts(tiny_bundle, tmp_path):
    count = os.cpu_count()
    for core in (count, -1, 9999):
        with pytest.raises(BenchError, match="no such core"):
            check_core(core)
    with pytest.raises(BenchError, match="no such model"):
        run_bench([tmp_path / "missing.tflite"], BenchOptions(runs=1, repeats=1))
    damaged = copy_bundle(tiny_bundle, tmp_path / "b")
    (damaged / "model_float32.tflite").write_bytes(b"changed")
    with pytest.raises(BundleError, match="sha256 mismatch"):
        run_bench([damaged], BenchOptions(runs=1, repeats=1))
    with pytest.raises(BenchError, match="at least 1"):
        run_bench([tiny_bundle], BenchOptions(runs=0))
    with pytest.raises(BenchError, match="no model"):
        run_bench([], BenchOptions(runs=1, repeats=1))


def test_pinning_restores_the_old_affinity():
    before = os.sched_getaffinity(0)
    core = max(before)
    with pinned([core]):
        assert os.sched_getaffinity(0) == {core}
    assert os.sched_getaffinity(0) == before


def test_each_interpreter_thread_gets_its_own_core(tiny_bundle, monkeypatch):
    # The interpreter's worker threads inherit the affinity it was made under.
    from henet_edge.device import bench as bench_mod

    made_under = []
    real_open = bench_mod.open_model

    def recording_open(*args, **kwargs):
        made_under.append(os.sched_getaffinity(0))
        return real_open(*args, **kwargs)

    monkeypatch.setattr(bench_mod, "open_model", recording_open)
    allowed = os.sched_getaffinity(0)
    if len(allowed) < 2:
        pytest.skip("needs 2 cores")
    result = run_bench([tiny_bundle], BenchOptions(runs=2, repeats=1, warmup=0, threads=2),
                       probe=Probe(vcgencmd=None)).result
    assert made_under == [set(result["cores"])] and len(result["cores"]) == 2
    assert result["core"] == max(allowed) and "cores" in format_result(result)
    with pytest.raises(BenchError, match="needs"):
        run_bench([tiny_bundle], BenchOptions(runs=2, repeats=1, threads=len(allowed) + 1),
                  probe=Probe(vcgencmd=None))


# ------------------------------------------------------------------ command line
def test_cli_bench_json_and_plot(tiny_bundle, tmp_path):
    plot = tmp_path / "latency.png"
    result = CliRunner().invoke(main, ["bench", str(tiny_bundle), "--precision", "all",
                                       "--runs", "10", "--repeats", "2", "--warmup", "1",
                                       "--json", "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert len(data["models"]) == 2
    assert data["runs"] == 10 and data["repeats"] == 2
    with Image.open(plot) as png:
        assert png.format == "PNG" and png.size[0] > 100


def test_cli_bench_latencies_file_holds_every_timed_pass(tiny_bundle, tmp_path):
    from henet_edge.device.bench import BenchError, read_latencies

    out = tmp_path / "deep" / "latencies.json"  # its folder is made
    result = CliRunner().invoke(main, ["bench", str(tiny_bundle), "--precision", "all",
                                       "--runs", "7", "--repeats", "3", "--warmup", "2",
                                       "--json", "--latencies", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    latencies = read_latencies(out)
    assert sorted(latencies) == sorted(m["name"] for m in data["models"])
    for model in data["models"]:
        ns = latencies[model["name"]]
        assert len(ns) == 7 * 3 and min(ns) > 0  # the timed passes, not the warm-up
        assert np.median(ns) / 1e6 == pytest.approx(model["per_inference_ms"]["median"],
                                                    rel=1e-6)
    for bad in ('{"unit": "ms", "models": {"m": [1]}}', '{"unit": "ns", "models": {"m": [0]}}',
                '{"unit": "ns", "models": {"m": [true]}}', '{"unit": "ns", "models": {}}',
                '{"unit": "ns", "models": {"m": [1e400]}}', '{"unit": "ns", "models": {"m": [-5]}}',
                '{"unit": "ns", "models": {"m": [' + "9" * 400 + ']}}', "[" * 100_000):
        out.write_text(bad)  # what a damaged or hostile device could send back
        with pytest.raises(BenchError, match="not a latencies file"):
            read_latencies(out)
    result = CliRunner().invoke(main, ["bench", str(tiny_bundle), "--runs", "3",
                                       "--latencies", str(tmp_path)])
    assert result.exit_code == 1 and "is a folder" in result.output


def test_cli_bench_plot_into_a_new_folder_named_with_a_slash(tiny_bundle, tmp_path):
    """--plot out/ for a missing folder wrote out.png beside it."""
    result = CliRunner().invoke(main, ["bench", str(tiny_bundle), "--runs", "3", "--repeats",
                                       "1", "--warmup", "0", "--plot", f"{tmp_path}/out/"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "latency.png").read_bytes().startswith(b"\x89PNG")
    assert not (tmp_path / "out.png").exists()


def test_cli_bench_table(tiny_bundle):
    result = CliRunner().invoke(main, ["bench", str(tiny_bundle / "model_int8.tflite"),
                                       str(tiny_bundle / "model_float32.tflite"),
                                       "--runs", "5", "--repeats", "2", "--warmup", "0"])
    assert result.exit_code == 0, result.output
    assert "time (s)" in result.stdout
    assert "ratios (row time / column time)" in result.stdout
    assert "model_int8" in result.stdout and "model_float32" in result.stdout


@pytest.mark.parametrize("args, message, code", [
    (["--core", "9999"], "no such core", 2),
    (["--runs", "1000000", "--repeats", "1000"], "their product at most", 2),
    (["--runs", "0"], "'--runs'", 2),  # a command line that cannot work: click's usage error
    (["--threads", "0"], "'--threads'", 2),
    (["--image", "MISSING"], "MISSING", 1),
])
def test_cli_bench_user_errors(tiny_bundle, tmp_path, args, message, code):
    args = [a.replace("MISSING", str(tmp_path / "missing.png")) for a in args]
    message = message.replace("MISSING", "missing.png")
    base = ["bench", str(tiny_bundle), "--repeats", "1", "--warmup", "0"]
    if "--runs" not in args:
        base += ["--runs", "2"]
    result = CliRunner().invoke(main, [*base, *args])
    assert result.exit_code == code
    assert "Traceback" not in result.output
    assert message in result.stderr


def test_two_bundles_of_one_model_go_by_their_folder_names(tiny_bundle, tmp_path):
    folded = copy_bundle(tiny_bundle, tmp_path / "folded")
    dense = copy_bundle(tiny_bundle, tmp_path / "dense")
    names = [n for n, _, _ in resolve_models([folded, dense], "int8")]
    assert names == ["folded/int8", "dense/int8"]
    twice = [n for n, _, _ in resolve_models([folded, folded], "int8")]
    assert len(set(twice)) == 2 and all(n.endswith(("#1", "#2")) for n in twice)


def test_the_tensorflow_fallback_can_time_without_xnnpack(tiny_bundle):
    # tf.lite keeps OpResolverType under tf.lite.experimental; --xnnpack-check refused it.
    from henet_edge.device.runtime import find_runtime, open_model

    runtime = find_runtime("tensorflow")
    model = open_model(tiny_bundle / "model_int8.tflite", xnnpack=False, runtime=runtime)
    assert model.delegate == "none (built-in kernels)" and model.delegate_nodes() == 0
    result = run_bench([tiny_bundle / "model_int8.tflite"],
                       BenchOptions(runs=3, repeats=1, warmup=1, xnnpack_check=True),
                       probe=Probe(vcgencmd=None), runtime=runtime).result
    delegates = sorted(m["delegate"] for m in result["models"])
    assert len(delegates) == 2 and delegates[0].startswith("XNNPACK")
    assert delegates[1] == "none (built-in kernels)"
    assert all(m["per_inference_ms"]["median"] > 0 for m in result["models"])
